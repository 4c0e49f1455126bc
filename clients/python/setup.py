"""Build hook: generates the gRPC stubs from the repository's .proto files.

The protos live in `<repo>/proto`, outside this package. A build from the
repository reads them there (`pip install ./clients/python` builds in place);
an sdist carries a copy in `proto/` so it builds anywhere. The stubs go to
`src/identity_gateway/_proto/` (not committed) with their imports made
relative, so they cannot clash with another copy of the same protos.
"""

import re
import shutil
import tempfile
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.egg_info import egg_info
from setuptools.command.sdist import sdist

HERE = Path(__file__).resolve().parent
OUT = HERE / "src" / "identity_gateway" / "_proto"
# The copy an sdist carries first, then the repository's own.
PROTO_ROOTS = [HERE / "proto", HERE.parent.parent / "proto"]
ABSOLUTE_IMPORT = re.compile(r"^from identity_gateway\.v1 import (\w+) as ", re.MULTILINE)


def proto_root() -> Path:
    for root in PROTO_ROOTS:
        if (root / "identity_gateway" / "v1" / "gateway.proto").is_file():
            return root
    raise SystemExit(
        "identity-gateway: cannot find the .proto files; looked in " + ", ".join(str(r) for r in PROTO_ROOTS)
    )


def write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")


def generate_stubs() -> None:
    import grpc_tools
    from grpc_tools import protoc

    root = proto_root()
    protos = sorted(str(p.relative_to(root)) for p in root.rglob("*.proto"))
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        status = protoc.main(
            [
                "grpc_tools.protoc",
                f"-I{root}",
                f"-I{well_known}",
                f"--python_out={tmp}",
                f"--pyi_out={tmp}",
                f"--grpc_python_out={tmp}",
                *protos,
            ]
        )
        if status != 0:
            raise SystemExit(f"identity-gateway: protoc failed ({status}) on {protos}")
        generated = sorted(Path(tmp, "identity_gateway", "v1").glob("*.py*"))
        if not generated:
            raise SystemExit("identity-gateway: protoc produced no stubs")
        for path in generated:
            text = ABSOLUTE_IMPORT.sub(r"from . import \1 as ", path.read_text(encoding="utf-8"))
            write_if_changed(OUT / path.name, text)
    write_if_changed(
        OUT / "__init__.py",
        '"""Stubs generated from proto/identity_gateway/v1 at build time. Do not edit."""\n',
    )


class EggInfoWithStubs(egg_info):
    # egg_info checks that every listed package directory exists, `_proto` included.
    def run(self):
        generate_stubs()
        super().run()


class BuildPyWithStubs(build_py):
    def run(self):
        generate_stubs()
        super().run()


class SdistWithProtos(sdist):
    def make_release_tree(self, base_dir, files):
        super().make_release_tree(base_dir, files)
        root = proto_root()
        target = Path(base_dir) / "proto"
        if root != target.resolve():
            shutil.copytree(root, target, dirs_exist_ok=True)


setup(cmdclass={"egg_info": EggInfoWithStubs, "build_py": BuildPyWithStubs, "sdist": SdistWithProtos})

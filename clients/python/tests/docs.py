"""The copy-paste snippets of the docs, as the tests run them: fenced blocks
right after a `<!-- test: KIND -->` line in README.md
(`<!-- grpcurl-examples ... -->` counts as `test: grpcurl`)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import List

import pytest

from gateway_process import REPO

DOCS = [REPO / "README.md"]
BLOCK = re.compile(r"<!--\s*(?:test:\s*(\w+)|(grpcurl)-examples\b[^>]*?)\s*-->\s*\n```[\w-]*\n(.*?)```", re.S)


def snippets(kind: str) -> List[str]:
    """Every block marked `kind`, once each."""
    found: List[str] = []
    for doc in DOCS:
        if doc.is_file():
            for marked, examples, body in BLOCK.findall(doc.read_text(encoding="utf-8")):
                if (marked or examples) == kind and body not in found:
                    found.append(body)
    return found


def shell_commands(block: str) -> List[str]:
    """The block's commands: backslash continuations joined; blank lines and
    comment lines dropped."""
    commands, current = [], ""
    for line in block.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        commands.append(current + line)
        current = ""
    return commands


def require_tool(path: str, how: str) -> str:
    """A tool the polyglot suite installs; missing is a failure there
    (IDENTITY_GATEWAY_REQUIRE_TOOLS=1) and a skip for a bare pytest run."""
    found = shutil.which(path) or (path if Path(path).is_file() else None)
    if found:
        return found
    message = f"{path} is not installed ({how})"
    if os.environ.get("IDENTITY_GATEWAY_REQUIRE_TOOLS") == "1":
        pytest.fail(message)
    pytest.skip(message)

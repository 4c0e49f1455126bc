"""Azurite (Microsoft's Storage emulator, installed by scripts/tools/azurite.sh)
as the real blob store behind the gateway's ReadBlob and SAS: HTTPS with a
throwaway CA made here, ``--oauth basic`` so it checks bearer tokens."""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import subprocess
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from docs import require_tool
from gateway_process import REPO

ACCOUNT = "devstoreaccount1"
START_TIMEOUT = 60.0


def write_test_ca(directory: Path) -> tuple:
    """A CA certificate and a server certificate/key it signed for
    localhost/127.0.0.1, as PEM files: (ca, cert, key)."""
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "identity-gateway polyglot test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = (directory / "ca.pem", directory / "server.pem", directory / "server-key.pem")
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Azurite:
    """One Azurite blob service on a free loopback port, in memory."""

    def __init__(self, directory: Path) -> None:
        binary = require_tool(
            str(REPO / ".tools" / "azurite" / "node_modules" / ".bin" / "azurite-blob"),
            "scripts/tools/azurite.sh installs it",
        )
        self.ca, cert, key = write_test_ca(directory)
        self.port = _free_port()
        self.log = directory / "azurite.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [binary, "--blobHost", "127.0.0.1", "--blobPort", str(self.port), "--oauth", "basic",
                 "--cert", str(cert), "--key", str(key), "--skipApiVersionCheck", "--inMemoryPersistence",
                 "--disableProductStyleUrl", "--disableTelemetry", "--silent"],
                cwd=directory, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            )
        self._wait_listening()

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                pass
            try:  # doubles as the pause between attempts, and notices an early exit
                code = self.proc.wait(timeout=0.05)
                raise AssertionError(f"Azurite exited with {code}: {self.log.read_text(errors='replace')}")
            except subprocess.TimeoutExpired:
                continue
        raise AssertionError(f"Azurite did not listen within {START_TIMEOUT}s: {self.log.read_text(errors='replace')}")

    @property
    def endpoint(self) -> str:
        """Path-style blob endpoint of the well-known account."""
        return f"https://127.0.0.1:{self.port}/{ACCOUNT}"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

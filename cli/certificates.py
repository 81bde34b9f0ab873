"""A certificate authority and certificates made per run with `openssl`,
for the secured Apache Kafka and Redis the tests start
(cli.apache_kafka, cli.embedded): a server certificate for `localhost`, a client
certificate (mutual TLS), and a second, unrelated CA that a test can
trust instead to see an unknown-CA failure.

Why the `openssl` command and not a Python library: it is on every
machine Java and Redis run on, the certificates are made once per
broker start, and no dependency is added for it. Kafka reads the server's
key and certificate as one PEM file (ssl.keystore.type=PEM), so no
keystore password is needed anywhere.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


class CertificatesUnavailable(RuntimeError):
    """`openssl` is missing or failed; the message says which step."""


@dataclass(frozen=True)
class Certificates:
    folder: Path
    ca: Path  # the CA's certificate (PEM): what clients and Kafka's truststore trust
    server_cert: Path
    server_key: Path
    server_keystore: Path  # server key + certificate in one PEM file, for Kafka (ssl.keystore.type=PEM)
    client_cert: Path  # signed by the same CA, for mutual TLS
    client_key: Path
    other_ca: Path  # a CA that signed nothing here


def _openssl(*args: str, cwd: Path) -> None:
    out = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    if out.returncode != 0:
        raise CertificatesUnavailable(f"openssl {args[0]} failed: {out.stderr[-1000:]}")


def _ca(folder: Path, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
             "-keyout", f"{name}.key", "-out", f"{name}.pem", cwd=folder)


def _signed(folder: Path, name: str, subject: str, extensions: str) -> None:
    (folder / f"{name}.ext").write_text(extensions)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={subject}",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=folder)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem", cwd=folder)


def make_certificates(folder: Path, hosts: tuple[str, ...] = ("localhost",)) -> Certificates:
    """A fresh CA, a server certificate valid for `hosts` only (a test that
    connects by another name sees the hostname check fail), a client
    certificate and an unrelated CA, under `folder`."""
    if shutil.which("openssl") is None:
        raise CertificatesUnavailable("`openssl` is not on PATH (it makes the test certificates)")
    folder.mkdir(parents=True, exist_ok=True)
    _ca(folder, "ca")
    _ca(folder, "other-ca")
    names = ",".join(f"DNS:{host}" for host in hosts)
    _signed(folder, "server", hosts[0], f"subjectAltName={names}\nextendedKeyUsage=serverAuth\n")
    _signed(folder, "client", "tierstream-client", "extendedKeyUsage=clientAuth\n")
    (folder / "server-keystore.pem").write_text((folder / "server.key").read_text() + (folder / "server.pem").read_text())
    return Certificates(
        folder=folder, ca=folder / "ca.pem", server_cert=folder / "server.pem", server_key=folder / "server.key",
        server_keystore=folder / "server-keystore.pem",
        client_cert=folder / "client.pem", client_key=folder / "client.key", other_ca=folder / "other-ca.pem",
    )

"""The image docker-compose.yml builds copies every package pyproject.toml
installs (it once missed engine/ and store/, added by a refactor: `pip
install .` in the image would have failed)."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_dockerfile_copies_every_installed_package():
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    tops = {name.split(".")[0] for name in packages}
    copied = set(re.findall(r"^COPY (\S+) \1$", (ROOT / "Dockerfile").read_text(), flags=re.M))
    assert tops <= copied, f"Dockerfile does not COPY {sorted(tops - copied)}"


def _properties(lines) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in lines if line.strip() and not line.startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


def test_the_secured_compose_broker_runs_the_security_the_suite_tests():
    """deploy/kafka-secured.properties (docker-compose.secured.yml) and the
    secured broker of tests/integration/test_secured.py agree on every
    SCRAM and TLS line the compose broker has."""
    from cli.apache_kafka import KafkaSecurity, _security_properties
    from cli.certificates import Certificates

    certs = Certificates(*(Path("/certs") / name for name in (
        "", "ca.pem", "server.pem", "server.key", "server-keystore.pem", "client.pem", "client.key", "other-ca.pem")))
    tested = _properties(_security_properties(KafkaSecurity(certs, {"u": "p"}, 1, 2)))
    shipped = _properties((ROOT / "deploy" / "kafka-secured.properties").read_text().splitlines())
    security = {k: v for k, v in shipped.items() if k.startswith(("sasl.", "listener.name.", "ssl."))}
    assert security and all(tested.get(k) == v for k, v in security.items() if k != "sasl.enabled.mechanisms"), \
        {k: (v, tested.get(k)) for k, v in security.items() if tested.get(k) != v}
    assert set(security["sasl.enabled.mechanisms"].split(",")) <= set(tested["sasl.enabled.mechanisms"].split(","))
    assert shipped["listener.security.protocol.map"].count("SASL_SSL:SASL_SSL") == 1

"""Command-line errors a user can cause say what is wrong (no broker needed)."""

from click.testing import CliRunner

from cli.main import cli
from state.rules import default_rules_text


def test_worker_refuses_a_bad_rules_file_naming_the_line(tmp_path, monkeypatch):
    rules = tmp_path / "rules.toml"
    text = default_rules_text().replace("at_risk_days = 30", "at_risk_days = 90")
    rules.write_text(text)
    monkeypatch.setenv("TIERSTREAM_RULES", str(rules))
    result = CliRunner().invoke(cli, ["worker"])
    # A rule that spans keys points at the table that holds them.
    line = text.splitlines().index("[stages]") + 1
    assert result.exit_code == 1
    assert "at_risk_days < churned_days" in result.output and str(rules) in result.output
    assert f"line {line}: stages:" in result.output


def test_bad_settings_are_reported_by_name(monkeypatch):
    monkeypatch.setenv("TIERSTREAM_CLOCK", "sometimes")
    result = CliRunner().invoke(cli, ["worker"])
    assert result.exit_code == 1 and "clock" in result.output


def test_replay_explains_a_bad_mapping(tmp_path):
    f = tmp_path / "h.csv"
    f.write_text("a,b\n1,2\n")
    result = CliRunner().invoke(cli, ["replay", str(f), "--map", "user_id=a"])
    assert result.exit_code == 1 and "--map must name the column for ts" in result.output


def test_exactly_once_demands_faust_recovery():
    import pytest
    from pydantic import ValidationError

    from stream.settings import Settings

    with pytest.raises(ValidationError, match="TIERSTREAM_RECOVERY=faust"):
        Settings(processing_guarantee="exactly_once")
    assert Settings(processing_guarantee="exactly_once", recovery="faust").processing_guarantee == "exactly_once"


def test_a_retried_coordinator_lookup_is_not_logged_as_an_error():
    """aiokafka says ERROR for a group-coordinator lookup it retries (every
    start on a fresh Apache Kafka); the worker's log shows it as INFO, only
    where aiokafka's INFO is on. Other errors stay errors."""
    import logging

    from cli.main import _RetriedCoordinatorLookup

    f = _RetriedCoordinatorLookup()
    aiokafka = logging.getLogger("aiokafka")
    level = aiokafka.level

    def record(msg):
        return logging.LogRecord("aiokafka.consumer.group_coordinator", logging.ERROR, __file__, 1, msg, None, None)

    transient = "Group Coordinator Request failed: [Error 15] GroupCoordinatorNotAvailableError"
    try:
        aiokafka.setLevel(logging.WARNING)
        r = record(transient)
        assert f.filter(r) is False and r.levelname == "INFO"
        aiokafka.setLevel(logging.INFO)
        assert f.filter(record(transient)) is True
        other = record("Group Coordinator Request failed: [Error 29] GroupAuthorizationFailedError")
        assert f.filter(other) is True and other.levelname == "ERROR"
    finally:
        aiokafka.setLevel(level)

"""`tierstream` command line (click: already a Faust dependency, composable)."""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
from pathlib import Path

import click
import orjson

from stream.connection import AccessProblem, kafka_access, kafka_problem, redis_access, redis_problem
from stream import topics
from stream.settings import Settings


def _settings() -> Settings:
    """TIERSTREAM_* from the environment; what it leaves unset of the broker,
    Redis and API addresses comes from a running `tierstream dev` (cli.dev_state)."""
    from cli.dev_state import defaults

    try:
        return Settings(**defaults())
    except Exception as exc:  # pydantic's message names the variable and the problem
        raise click.ClickException(f"bad TIERSTREAM_* setting:\n{exc}") from exc


def _local_document(settings: Settings):  # type: ignore[no-untyped-def]
    """This process's own rules and campaigns (TIERSTREAM_RULES,
    TIERSTREAM_CAMPAIGNS) as one document, or a clean exit naming the file."""
    from state.campaigns import example_campaigns_text
    from state.config import ConfigDocument
    from state.rules import default_rules_text

    def read(path: str, setting: str) -> str:
        try:
            return Path(path).read_text()
        except OSError as exc:
            raise click.ClickException(f"{path}: cannot read ({exc.strerror}); check {setting}") from exc

    if settings.rules is None:
        rules_text, rules_source = default_rules_text(), "default_rules.toml"
    else:
        rules_text, rules_source = read(str(settings.rules), "TIERSTREAM_RULES"), str(settings.rules)
    campaigns_text = campaigns_source = None
    if settings.campaigns == "example":
        campaigns_text, campaigns_source = example_campaigns_text(), "example_campaigns.toml"
    elif settings.campaigns:
        campaigns_text, campaigns_source = read(settings.campaigns, "TIERSTREAM_CAMPAIGNS"), settings.campaigns
    return ConfigDocument(rules_text, campaigns_text, rules_source, campaigns_source)


def _parsed(document):  # type: ignore[no-untyped-def]
    """The document's rules, or a clean exit naming the line and the problem."""
    from state.rules import RulesError

    try:
        return document.rules()
    except RulesError as exc:
        raise click.ClickException(str(exc)) from exc


def _rules(settings: Settings):  # type: ignore[no-untyped-def]
    """The rules every tool evaluates with: the version in force on
    tierstream.config (what the workers run), whatever this shell's
    TIERSTREAM_RULES / TIERSTREAM_CAMPAIGNS say; this process's own files
    only while no worker has published a version."""
    from stream.config_topic import in_force

    local = _local_document(settings)
    try:
        published = _run(in_force(kafka_access(settings)))
    except Exception as exc:  # no broker: the tool's own call will say so more precisely
        click.echo(f"note: could not read the configuration in force ({exc}); using this shell's rules", err=True)
        published = None
    if published is None:
        return _parsed(local)
    if published.document.version != local.version and (settings.rules is not None or settings.campaigns):
        click.echo(f"note: using rules version {published.document.version}, in force on the workers "
                   f"(this shell's TIERSTREAM_RULES / TIERSTREAM_CAMPAIGNS are version {local.version})", err=True)
    return _parsed(published.document)


class _RetriedCoordinatorLookup(logging.Filter):
    """aiokafka logs a failed group-coordinator lookup as an ERROR even when
    it retries it, as it does on every start against a fresh Apache Kafka,
    whose coordinator is still loading: that is no error. Such a record
    becomes INFO, shown only where aiokafka's INFO is. Any other error stays."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.ERROR and "GroupCoordinatorNotAvailableError" in record.getMessage():
            record.levelno, record.levelname = logging.INFO, "INFO"
            return logging.getLogger("aiokafka").getEffectiveLevel() <= logging.INFO
        return True


def _configure_logging(settings: Settings) -> None:
    """Worker and API: every line with its time and level."""
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("aiokafka", "faust", "mode"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(settings.log_level)))
    logging.getLogger("aiokafka.consumer.group_coordinator").addFilter(_RetriedCoordinatorLookup())


def _check_access(settings: Settings, kafka: bool = True, redis: bool = False) -> None:
    """Stop at once, saying why, where Kafka or Redis refuses this process's
    credentials or certificates: that does not mend itself, and the clients
    would otherwise retry it for ever with a vaguer message. A server that
    is merely down is left to the clients' own retries."""
    problems: list[AccessProblem] = []

    async def check() -> None:
        if kafka and (problem := await kafka_problem(kafka_access(settings))):
            problems.append(problem)
        if redis and (problem := await redis_problem(redis_access(settings))):
            problems.append(problem)

    _run(check(), check_access=False)
    for problem in problems:
        if problem.lasting:
            raise click.ClickException(problem.message)
        logging.getLogger("tierstream").warning("%s (going on: the clients retry)", problem.message)


def _run(coro, check_access: bool = True):  # type: ignore[no-untyped-def]
    # A private loop, closed after: Faust later builds its own.
    from aiokafka.errors import KafkaConnectionError

    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    except KafkaConnectionError:
        # aiokafka says only "Unable to bootstrap": find out why, in words.
        if check_access:
            _check_access(_settings())
        raise
    finally:
        loop.close()
        asyncio.set_event_loop(asyncio.new_event_loop())


@click.group()
def cli() -> None:
    """tierstream: real-time user tiers and churn alerts on Kafka."""


@cli.command()
def worker() -> None:
    """Run a Faust worker: events in, tier changes, alerts and Redis membership out."""
    import faust
    from prometheus_client import start_http_server

    from agents.gc_tuning import collect_less_often
    from agents.wiring import install
    from stream.admin import ensure_topics
    from stream.app import build_app

    from functools import partial

    from cli.rollout import outcomes as rollout_outcomes
    from state.config import ConfigMismatch
    from stream.config_topic import config_summary, establish

    settings = _settings()
    local = _local_document(settings)
    _parsed(local)  # a bad file stops here, naming the line, before anything is published
    _configure_logging(settings)
    _check_access(settings, redis=True)
    _run(ensure_topics(kafka_access(settings), settings.partitions))
    try:
        published = _run(establish(kafka_access(settings), local, by=f"worker on {socket.gethostname()}",
                                   settle=partial(rollout_outcomes, settings)))
    except ConfigMismatch as exc:
        raise click.ClickException(str(exc)) from exc
    rules = _parsed(published.document)
    logging.getLogger(__name__).info("rules version %s in force (%s, %s)", rules.version,
                                     published.document.rules_source, published.document.campaigns_source)
    collect_less_often()
    streams = build_app(settings)
    install(streams, settings, rules, _run(config_summary(kafka_access(settings))))
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr=settings.metrics_host)
    worker_ = faust.Worker(streams.app, loglevel=settings.log_level, quiet=True, redirect_stdouts=False)
    # Faust's start-up spinner (a public attribute it checks before each use)
    # writes cursor codes even where stdout is a log file, not a terminal.
    worker_.spinner = None
    worker_.execute_from_commandline()


@cli.command()
def api() -> None:
    """Serve the read API (reads Redis only)."""
    from api.server import run_api

    s = _settings()
    _configure_logging(s)
    # Its own files serve only until a worker has written the version in
    # force to Redis (api.config); the API talks to Redis alone, never Kafka.
    rules = _parsed(_local_document(s))
    logging.getLogger("api").info("tierstream API on http://%s:%s (dashboard at /)", s.api_host, s.api_port)
    _check_access(s, kafka=False, redis=True)
    run_api(redis_access(s), s.redis_prefix, s.api_host, s.api_port, rules, s.api_token)


@cli.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def produce(file: Path) -> None:
    """Send a JSON-lines file of events to tierstream.events (keyed by user_id)."""
    from cli.io import produce_file

    s = _settings()
    sent, unkeyed = _run(produce_file(s, file))
    click.echo(f"sent {sent} events ({unkeyed} without a readable user_id: the worker will dead-letter them)")


@cli.command()
@click.argument("topic")
@click.option("--from-end", is_flag=True, help="Only print records produced from now on.")
@click.option("--max", "max_records", type=int, default=None, help="Stop after this many records.")
@click.option("--idle", type=float, default=None, help="Stop after this many seconds without a record.")
def tail(topic: str, from_end: bool, max_records: int | None, idle: float | None) -> None:
    """Print an output topic as JSON lines."""
    from cli.io import tail_topic

    _run(tail_topic(_settings(), topic, from_end=from_end, max_records=max_records, idle=idle))


@cli.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--map", "mapping", default=None, help="CSV only: field=Column,... e.g. user_id=CustomerID,ts=InvoiceDate,amount=Total")
@click.option("--type", "default_type", default="order", show_default=True, help="CSV: event type of rows without one")
@click.option("--tz", default="UTC", show_default=True, help="CSV: time zone of times without an offset")
@click.option("--ts-format", default=None, help="CSV: strptime format of the time column, e.g. '%m/%d/%Y %H:%M'")
@click.option("--until", default=None, help="Stop at this event time (ISO-8601 with offset, or epoch ms)")
@click.option("--rate", type=float, default=None, help="At most this many events per second")
@click.option("--no-progress", is_flag=True, help="No progress bar")
def replay(file: Path, mapping: str | None, default_type: str, tz: str, ts_format: str | None,
           until: str | None, rate: float | None, no_progress: bool) -> None:
    """Feed a JSON-lines or CSV history to tierstream.events in event-time order."""
    from cli.replay import CsvMapping, ReplayError, parse_time_arg, replay as run_replay

    s = _settings()
    try:
        csv_map = CsvMapping.parse(mapping, default_type=default_type, tz=tz, ts_format=ts_format) if mapping else None
        until_ms = parse_time_arg(until) if until else None
        done = run_replay(s, file, mapping=csv_map, until_ms=until_ms, rate=rate, progress=not no_progress)
    except ReplayError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"replayed {done['sent']} events in {done['seconds']:.1f}s "
        f"({done['sent'] / max(done['seconds'], 1e-9):,.0f}/s); {done['untimed']} without a readable time "
        f"(sent last: the worker dead-letters them); {done['skipped_after_until']} after --until, not sent"
    )


@cli.command()
@click.option("--as-of", "as_of", required=True, help="Event time (ISO-8601 with offset, or epoch ms)")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="FILE.csv or FILE.jsonl")
@click.option("--wait", type=float, default=None, help="First wait up to this many seconds for the worker to catch up")
def snapshot(as_of: str, out: Path, wait: float | None) -> None:
    """Write every user's tier, stage and figures as of an event time."""
    from cli.replay import ReplayError, parse_time_arg
    from cli.snapshot import SnapshotError, take_snapshot

    s = _settings()
    rules = _rules(s)
    parked: list = []
    try:
        users = _run(take_snapshot(s, rules, parse_time_arg(as_of), out, wait, parked))
    except (ReplayError, SnapshotError) as exc:
        raise click.ClickException(str(exc)) from exc
    for p in parked[:5]:
        click.echo(f"warning: {p.reason}", err=True)
    if parked:
        click.echo(f"warning: {len(parked)} users could not be brought to the snapshot time and show their "
                   "last evaluation", err=True)
    click.echo(f"wrote {users} users to {out} (rules version {rules.version})")


@cli.command()
@click.option("--grain", type=click.Choice(["day", "week", "month"]), default="week", show_default=True)
@click.option("--from", "start", default=None, help="First period: a date or a label (2024-W05, 2024-03)")
@click.option("--to", "end", default=None, help="Last period (default: the latest)")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@click.option("--acquisition", is_flag=True, help="LTV against CAC per acquisition channel and cohort instead "
              "(--grain week or month: the cohorts; --from/--to: which)")
@click.option("--api", default=None, help="Read API base URL (default: http://TIERSTREAM_API_HOST:TIERSTREAM_API_PORT)")
def report(grain: str, start: str | None, end: str | None, fmt: str, acquisition: bool, api: str | None) -> None:
    """KPIs per period, the latest tier flows and the cohort triangle, from the read API."""
    from rich.console import Console

    from cli.report import ReportError, build, build_acquisition, render, render_acquisition

    s = _settings()
    base = api or f"http://{s.api_host}:{s.api_port}"
    console = Console(width=200 if fmt == "table" else None, soft_wrap=fmt != "table")
    try:
        if acquisition:
            if grain == "day":
                raise click.UsageError("acquisition cohorts are weeks or months: --grain week or --grain month")
            render_acquisition(build_acquisition(base, grain, start, end), fmt, console)
            return
        data = build(base, grain, start, end)
    except ReportError as exc:
        raise click.ClickException(str(exc)) from exc
    render(data, fmt, console)


@cli.group()
def costs() -> None:
    """Acquisition cost statements (tierstream.costs): what each channel cost per period."""


@costs.command("publish")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def costs_publish(file: Path) -> None:
    """Send the statements of a CSV file with the columns channel, period
    (2024-03-05, 2024-W10 or 2024-03) and amount. Every line is checked
    first: a file with a bad line sends nothing. A statement replaces an
    earlier one for the same channel and period."""
    from cli.io import publish_costs, read_cost_file

    try:
        statements = read_cost_file(file)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    _run(publish_costs(_settings(), statements))
    click.echo(f"sent {len(statements)} cost statements to {topics.COSTS}")


@cli.command()
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--api", default=None, help="Read API base URL (default: http://TIERSTREAM_API_HOST:TIERSTREAM_API_PORT)")
def campaigns(fmt: str, api: str | None) -> None:
    """Each campaign's arms, conversion, uplift with its 95% interval, p-value and ROI, from the read API."""
    from rich.console import Console

    from cli.report import ReportError, fetch, render_campaigns

    s = _settings()
    try:
        doc = fetch(api or f"http://{s.api_host}:{s.api_port}", "/v1/campaigns")
    except ReportError as exc:
        raise click.ClickException(str(exc)) from exc
    render_campaigns(doc, fmt, Console(width=220 if fmt == "table" else None))


@cli.group()
def rules() -> None:
    """Rules changes: see what one would do, roll it out to the running workers, withdraw a roll-out."""


# The new campaigns a rules change comes with: those in force unless given.
NEW_CAMPAIGNS = click.option("--campaigns", "campaigns_file", default=None,
                             type=click.Path(exists=True, dir_okay=False, path_type=Path),
                             help="New campaigns too (default: the campaigns in force)")


@rules.command("preview")
@click.argument("new_rules", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@NEW_CAMPAIGNS
@click.option("--at", "at", default=None, help="Event time to evaluate at (default: the latest event any user's "
              "state has seen)")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--save", "save_by", default=None, metavar="NAME",
              help="Keep the preview in Redis, as run by NAME, for the API (GET /v1/rules/previews)")
def rules_preview(new_rules: Path, campaigns_file: Path | None, at: str | None, fmt: str,
                  save_by: str | None) -> None:
    """Evaluate every user under NEW_RULES and under the rules in force, at
    the same event time, and print the tier and stage counts of both, the
    flow matrix between them and the campaigns the moves would trigger.
    Nothing is published and no state changes."""
    from rich.console import Console

    from cli.preview import render, run_preview
    from cli.replay import ReplayError, parse_time_arg

    s = _settings()
    old = _rules(s)
    new = _parsed(_new_document(s, new_rules, campaigns_file))
    try:
        at_ms = parse_time_arg(at) if at else None
        doc = _run(run_preview(s, old, new, at_ms))
    except (ReplayError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    render(doc, fmt, Console(width=160 if fmt == "table" else None))
    if save_by is not None:
        from cli.preview import save

        _run(save(s, doc, save_by, str(new_rules)))
        click.echo(f"saved: GET /v1/rules/previews/{doc['new_version']}", err=True)


@rules.command("apply")
@click.argument("new_rules", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@NEW_CAMPAIGNS
@click.option("--at", "at", default=None, help="Event time the new version is in force from (epoch ms or "
              "ISO-8601; default: as soon as every worker can, on a cadence boundary with quantile scores)")
@click.option("--by", required=True, help="Who is rolling this version out (kept with it)")
@click.option("--wait", "wait_s", type=float, default=120.0, show_default=True,
              help="Seconds to wait for every worker's answer")
def rules_apply(new_rules: Path, campaigns_file: Path | None, at: str | None, by: str, wait_s: float) -> None:
    """Roll NEW_RULES out to the running workers, without a restart.

    Every partition reports how far it has decided, and the version comes
    into force at one event time on all of them (--at, if no partition has
    decided past it; else refused). Each worker then re-assesses every one
    of its users at that time and publishes a change, flagged
    `rules_changed`, for those whose tier or stage moves. `tierstream rules
    preview` shows beforehand what that will be."""
    from cli.replay import ReplayError, parse_time_arg
    from cli.rollout import RolloutError, apply
    from stream.codecs import iso

    s = _settings()
    document = _new_document(s, new_rules, campaigns_file)
    _parsed(document)
    try:
        at_ms = parse_time_arg(at) if at else None
        published, outcome, seconds = _run(apply(s, document, by, at_ms, wait_s))
    except (ReplayError, RolloutError) as exc:
        raise click.ClickException(str(exc)) from exc
    if outcome is None:
        raise click.ClickException(f"version {document.version} proposed, but not every partition answered in "
                                   f"{wait_s:.0f} s (are all the workers running?); it settles when they do: "
                                   "`tierstream config history` says how")
    if outcome.from_ms is None:
        raise click.ClickException(f"version {document.version} refused: {outcome.reason}; the version in force "
                                   f"stays in force (answered in {seconds:.1f} s)")
    click.echo(f"rules version {document.version} in force from event time {iso(outcome.from_ms)} "
               f"({outcome.from_ms}) on every worker (every partition answered in {seconds:.1f} s); its changes "
               "are flagged rules_changed. Start workers from now on with these files "
               "(`tierstream config show --rules-out`)")


@rules.command("withdraw")
@click.option("--by", required=True, help="Who is withdrawing it (kept with it)")
@click.option("--wait", "wait_s", type=float, default=60.0, show_default=True,
              help="Seconds to wait for the workers to read it")
def rules_withdraw(by: str, wait_s: float) -> None:
    """Withdraw the open roll-out, one some partition has not answered (its
    worker down, say), which holds every partition until it settles. It is
    refused, as withdrawn, unless every partition had answered first."""
    from cli.rollout import RolloutError, withdraw

    try:
        proposal, outcome = _run(withdraw(_settings(), by, wait_s))
    except RolloutError as exc:
        raise click.ClickException(str(exc)) from exc
    if outcome is None:
        raise click.ClickException(f"the withdrawal of version {proposal.document.version} is sent but not settled "
                                   "yet; `tierstream config history` says when it is")
    if outcome.from_ms is not None:
        click.echo(f"too late: every partition had answered first, and version {proposal.document.version} is in "
                   f"force from event time {outcome.from_ms}")
    else:
        click.echo(f"version {proposal.document.version}: {outcome.reason}; the version in force stays in force")


def _new_document(settings: Settings, rules_file: Path, campaigns_file: Path | None):  # type: ignore[no-untyped-def]
    """NEW rules with `--campaigns`, or else the campaigns in force (this
    shell's, before any worker has published a version)."""
    from state.config import ConfigDocument

    in_force = _run(_in_force_document(settings)) or _local_document(settings)
    if campaigns_file is not None:
        return ConfigDocument(rules_file.read_text(), campaigns_file.read_text(), str(rules_file), str(campaigns_file))
    return ConfigDocument(rules_file.read_text(), in_force.campaigns_text, str(rules_file), in_force.campaigns_source)


async def _in_force_document(settings: Settings):  # type: ignore[no-untyped-def]
    from stream.config_topic import in_force

    published = await in_force(kafka_access(settings))
    return published.document if published is not None else None


@cli.group()
def config() -> None:
    """The configuration in force: the rules and campaigns every worker and tool runs (docs/config.md)."""


@config.command("show")
@click.option("--json", "as_json", is_flag=True, help="The whole document as JSON (texts included)")
@click.option("--rules-out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the rules text in force to this file")
@click.option("--campaigns-out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the campaigns text in force to this file")
def config_show(as_json: bool, rules_out: Path | None, campaigns_out: Path | None) -> None:
    """Say which version is in force, and since when."""
    from datetime import UTC, datetime

    from stream.config_topic import history

    s = _settings()
    versions = _run(history(kafka_access(s)))
    if not versions:
        raise click.ClickException("no configuration is in force yet: the first worker to start publishes its "
                                   "TIERSTREAM_RULES and TIERSTREAM_CAMPAIGNS")
    current = versions[-1]
    if rules_out is not None:
        rules_out.write_text(current.document.rules_text)
    if campaigns_out is not None:
        campaigns_out.write_text(current.document.campaigns_text or "")
    if as_json:
        click.echo(orjson.dumps(current.summary()).decode())
        return
    local = _local_document(s)
    when = datetime.fromtimestamp(current.at_ms / 1000, UTC).isoformat(timespec="seconds")
    click.echo(f"rules version {current.document.version} in force since {when}, published by {current.by}")
    click.echo(f"  rules from {current.document.rules_source}; campaigns from "
               f"{current.document.campaigns_source or 'none'}; {len(versions)} version(s) published so far")
    if local.version != current.document.version:
        click.echo(f"  this shell's TIERSTREAM_RULES / TIERSTREAM_CAMPAIGNS are version {local.version}, not in force")


@config.command("history")
@click.option("--json", "as_json", is_flag=True, help="As JSON (what GET /v1/config/history serves)")
def config_history_command(as_json: bool) -> None:
    """Every version put in force, newest first: when, by whom, and what it changed."""
    from datetime import UTC, datetime

    from cli.io import rollout_outcomes
    from state.config import config_history
    from stream.config_topic import history

    s = _settings()
    published = _run(history(kafka_access(s)))
    versions = config_history(published, _run(rollout_outcomes(s, published)))
    if as_json:
        click.echo(orjson.dumps({"versions": versions}).decode())
        return
    if not versions:
        raise click.ClickException("no configuration is in force yet")
    current = next((n for n, v in enumerate(versions) if v.get("rollout", {}).get("status", "in_force") == "in_force"),
                   None)
    for n, v in enumerate(versions):
        when = datetime.fromtimestamp(v["published_at_ms"] / 1000, UTC).isoformat(timespec="seconds")
        rollout = v.get("rollout")
        how = "" if rollout is None else (
            f"  rolled out live, in force from event time {rollout['in_force_from_ms']}"
            if rollout["status"] == "in_force" else f"  roll-out {rollout['status']}"
            + (f": {rollout['reason']}" if rollout.get("reason") else ""))
        click.echo(f"{v['version']}  {when}  by {v['published_by'] or '?'}{how}"
                   + ("  (in force)" if n == current else ""))
        for change in v["changes"] or (["first version"] if n == len(versions) - 1 else ["no change in the texts"]):
            click.echo(f"    {change}")


@config.command("publish")
@click.option("--by", required=True, help="Who is putting this version in force (kept with it)")
def config_publish(by: str) -> None:
    """Put this shell's TIERSTREAM_RULES and TIERSTREAM_CAMPAIGNS in force.

    Stop every worker first, then start them with the same files: a worker
    whose files are not the version in force refuses to start."""
    from stream.admin import ensure_topics
    from stream.config_topic import in_force, publish

    s = _settings()
    local = _local_document(s)
    _parsed(local)
    kafka = kafka_access(s)
    _run(ensure_topics(kafka, s.partitions))
    current = _run(in_force(kafka))
    if current is not None and current.document.version == local.version:
        click.echo(f"rules version {local.version} is already in force")
        return
    _run(publish(kafka, local, by))
    click.echo(f"rules version {local.version} in force (was {current.document.version if current else 'none'}); "
               "start the workers with these files")


@cli.command()
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option("--host", "hosts", multiple=True, default=["localhost"], show_default=True,
              help="A name the server certificate is valid for (repeat for more)")
def certificates(folder: Path, hosts: tuple[str, ...]) -> None:
    """Make a CA, a server and a client certificate in FOLDER, for trying a
    secured set-up (docker-compose.secured.yml). In production, use your
    own CA's or your provider's."""
    from cli.certificates import CertificatesUnavailable, make_certificates

    try:
        made = make_certificates(folder, tuple(hosts))
    except CertificatesUnavailable as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"CA {made.ca}; server certificate for {', '.join(hosts)}: {made.server_cert} (key {made.server_key}, "
               f"both in {made.server_keystore} for Kafka); client certificate {made.client_cert} (key {made.client_key})")


@cli.command("rebuild-cache")
def rebuild_cache() -> None:
    """Rebuild Redis membership from the users table's changelog."""
    from cli.io import rebuild_membership

    s = _settings()
    _check_access(s, redis=True)
    rules = _rules(s)
    users, written = _run(rebuild_membership(s, rules))
    click.echo(f"rebuilt membership of {users} users ({written} records written) with rules version {rules.version}")


@cli.command()
@click.option("--no-demo", is_flag=True, help="Start everything but the demo event generator.")
@click.option("--speed", type=float, default=2.0, show_default=True, help="Demo: simulated days per second.")
@click.option("--users", type=int, default=200, show_default=True, help="Demo: shoppers at the start.")
@click.option("--arrivals", type=float, default=2.0, show_default=True,
              help="Demo: new shoppers per simulated day (shoppers also leave: the active shop levels off at "
                   "about 150 times this).")
@click.option("--duration", type=float, default=None, help="Stop by itself after this many seconds.")
@click.option("--broker", type=click.Choice(["tansu", "kafka"]), default="tansu", show_default=True,
              help="tansu: the embedded broker; kafka: Apache Kafka (needs Java and Maven; fetched once).")
def dev(no_demo: bool, speed: float, users: int, arrivals: float, duration: float | None, broker: str) -> None:
    """Embedded default: broker, Redis, worker, API, demo generator, live view."""
    from cli.apache_kafka import KafkaUnavailable
    from cli.dev import run_dev

    try:
        sys.exit(run_dev(demo=not no_demo, speed=speed, users=users, duration=duration, broker=broker,
                         arrivals=arrivals))
    except KafkaUnavailable as exc:
        raise click.ClickException(f"--broker kafka: {exc}; the default broker (tansu) needs neither") from exc


def main() -> None:
    cli()


if __name__ == "__main__":
    main()

"""`tierstream dev`: the whole system on this machine, with a live view.

Broker (Tansu, or Apache Kafka with --broker kafka) and Redis on free ports, a worker and the API as child
processes, the demo generator and the view in this one. Ctrl-C (or
--duration) stops everything in reverse order; children also die with us.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from datetime import UTC, datetime

from rich.console import Console
from rich.live import Live

from cli import dev_state
from cli.demo import DemoClock, DemoGenerator, run_demo
from cli.embedded import EmbeddedServers
from cli.processes import free_port, spawn, stop, wait_for_port
from cli.live_view import ViewState, follow_outputs, poll_counts, poll_kpis, render
from store.membership import MembershipReader
from stream.admin import ensure_topics

PARTITIONS = 4
SECURITY_SETTINGS = ("TIERSTREAM_KAFKA_", "TIERSTREAM_REDIS_USERNAME", "TIERSTREAM_REDIS_PASSWORD", "TIERSTREAM_REDIS_SSL_")
BROKER_NAMES = {"tansu": "Kafka protocol; Tansu, memory storage", "kafka": "Apache Kafka, single KRaft node"}


def run_dev(*, demo: bool, speed: float, users: int, duration: float | None, broker: str = "tansu",
            arrivals: float = 2.0) -> int:
    console = Console()
    servers = EmbeddedServers(broker_kind=broker).start(PARTITIONS)
    api_port = free_port()
    env = {
        # The broker and Redis started here are open: a shell's security
        # settings (meant for a real cluster) must not reach their clients.
        **{k: v for k, v in os.environ.items() if not k.startswith(SECURITY_SETTINGS)},
        "TIERSTREAM_BROKER": servers.broker,
        "TIERSTREAM_REDIS_URL": servers.redis_url,
        "TIERSTREAM_API_PORT": str(api_port),
        "TIERSTREAM_PARTITIONS": str(PARTITIONS),
        # The demo's accelerated time is event time: let only events move the clock.
        "TIERSTREAM_CLOCK": "replay" if demo else os.environ.get("TIERSTREAM_CLOCK", "live"),
        "TIERSTREAM_SESSION_TIMEOUT_SECONDS": "6",
        # The example campaigns (state/example_campaigns.toml) unless told otherwise.
        "TIERSTREAM_CAMPAIGNS": os.environ.get("TIERSTREAM_CAMPAIGNS", "example"),
    }
    procs = []
    try:
        asyncio.run(ensure_topics(servers.kafka, PARTITIONS))
        procs.append(spawn([sys.executable, "-m", "cli.main", "worker"], env=env, log=servers.workdir / "worker.log"))
        api = spawn([sys.executable, "-m", "cli.main", "api"], env=env, log=servers.workdir / "api.log")
        procs.append(api)
        wait_for_port(api_port, api, what="tierstream api")
        state = dev_state.write(servers.broker, servers.redis_url, api_port, PARTITIONS, servers.workdir)
        header = (
            f"broker    {servers.broker}   ({BROKER_NAMES[broker]})\n"
            f"redis     {servers.redis_url}\n"
            f"dashboard http://127.0.0.1:{api_port}/\n"
            f"api       http://127.0.0.1:{api_port}/v1/segments   (all endpoints: /openapi.json)\n"
            f"logs      {servers.workdir}\n"
            f"state     {state}   (tierstream commands in other shells use these addresses)"
        )
        console.print(header)
        view = ViewState(header=header)
        asyncio.run(_live(servers, view, demo=demo, speed=speed, users=users, arrivals=arrivals, duration=duration,
                          console=console,
                          api=f"http://127.0.0.1:{api_port}"))
        console.print(
            f"stopped: {view.events_sent} events sent, {view.total_changes} tier changes, "
            f"{view.total_alerts} churn alerts, {view.total_dead_letters} dead letters"
        )
        return 0
    finally:
        dev_state.remove()
        for proc in reversed(procs):
            stop(proc)
        servers.stop()


async def _live(servers, view, *, demo, speed, users, arrivals, duration, console, api) -> None:  # type: ignore[no-untyped-def]
    stop_event = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop_event.set)
    redis = servers.redis.client()
    tasks = [
        asyncio.create_task(follow_outputs(servers.kafka, view, stop_event)),
        asyncio.create_task(poll_counts(MembershipReader(redis, "tierstream:"), view, stop_event)),
        asyncio.create_task(poll_kpis(api, view, stop_event)),
    ]
    clock = None
    if demo:
        clock = DemoClock(speed=speed)
        generator = DemoGenerator(users=users, clock=clock, arrivals_per_day=arrivals)
        view.on_action = generator.treat  # simulated users respond to campaigns (a known true effect)

        def sent(n: int) -> None:
            view.events_sent += n

        tasks.append(asyncio.create_task(run_demo(servers.kafka, generator, stop_event, on_batch=sent)))
    if duration is not None:
        loop.call_later(duration, stop_event.set)
    def tick() -> None:
        if clock is not None:
            view.sim_time = datetime.fromtimestamp(clock.now_ms() / 1000, tz=UTC).strftime("%Y-%m-%d")

    try:
        if console.is_terminal:
            with Live(render(view), console=console, refresh_per_second=4, transient=False) as live:
                while not await _stopped(stop_event, 0.25):
                    tick()
                    live.update(render(view))
        else:
            # Output to a file or a pipe: a live view redraws nothing there, so
            # a plain line every ten seconds says the system is alive.
            while not await _stopped(stop_event, 10.0):
                tick()
                console.print(status_line(view), highlight=False)
            console.print(render(view))  # the whole view once, at the end
    finally:
        stop_event.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await redis.aclose()


async def _stopped(stop_event: asyncio.Event, within: float) -> bool:
    try:
        await asyncio.wait_for(stop_event.wait(), timeout=within)
    except TimeoutError:
        return False
    return True


def status_line(view: ViewState) -> str:
    return (f"{datetime.now().strftime('%H:%M:%S')}  event time {view.sim_time or '-'}  events sent "
            f"{view.events_sent}  tier changes {view.total_changes}  churn alerts {view.total_alerts}  "
            f"dead letters {view.total_dead_letters}")

"""Where a backfill worker's time goes: bench.backfill's history decided
once with fixed thresholds and once with the shipped defaults, py-spy
attached to each worker, the samples summed by area of the worker.

    python -m bench.profile                         # 25k customers, 4 partitions, Tansu
    python -m bench.profile --partitions 16 --out-dir /tmp/profiles   # keep py-spy's raw stacks

Prints, per area, the seconds of samples under each rule set and the
shipped defaults' extra: what issue #23's closing note calls "a profile
where a target is not met". py-spy (`pip install .[bench]`) samples the
worker from outside at `--rate` Hz; it needs to be allowed to read the
worker's memory (as root, or with ptrace allowed), and slows the worker a
little: compare the columns with each other, not with bench.backfill's
times.

Each stack is counted once, in the first area of AREAS any of its frames
belongs to: the step that publishes a record counts as publishing, the
step that decides it as a step.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from bench.backfill import one_run, purchase_history
from bench.run import log

# (area, what marks a frame as the area's), in the order stacks are matched.
AREAS: list[tuple[str, tuple[str, ...]]] = [
    ("start-up (imports)", ("<frozen importlib._bootstrap>",)),
    ("operator metrics aggregation", ("agents/metrics_aggregator.py", "store/metrics_store.py")),
    ("Redis (membership, live feed)", ("/redis/", "agents/redis_sync.py", "store/membership.py",
                                       "store/live_feed.py", "flush_to_redis")),
    ("records out (decisions, changelog, producer)", ("agents/publisher.py", "agents/routing.py",
                                                       "agents/outbox.py", "aiokafka/producer",
                                                       "stream/codecs.py")),
    ("churn model fit", ("scipy/optimize",)),
    ("population reports (made, read, settled)", ("PopulationReports.", "snapshot_doc", "Coordinator._report",
                                                   "PopulationReader._add_all")),
    ("steps (engine, state)", ("/engine/", "/state/", "agents/ingest.py", "agents/pipeline.py")),
    ("consumer (fetch, decode)", ("aiokafka/", "faust/transport")),
]
WAITING = "waiting in select"
OTHER = "other (Faust, asyncio, logging)"
_FRAME = re.compile(r"^(.*) \((.*?)(?::\d+)?\)$")


def area_of(frames: list[str]) -> str:
    """The area a stack's samples count in (frames outermost first, as
    py-spy's raw format writes them: `function (path:line)`)."""
    if frames and re.match(r"^(\w+\.)?select \(", frames[-1]) and "selectors.py" in frames[-1]:
        return WAITING
    # py-spy shortens a path to what follows its sys.path entry
    # (`engine/partition.py`): a leading "/" lets "/engine/" match either.
    frames = [f"{m[1]} (/{m[2].lstrip('/')})" if (m := _FRAME.match(f)) else f for f in frames]
    for area, marks in AREAS:
        if any(mark in frame for frame in frames for mark in marks):
            return area
    return OTHER


def by_area(raw: str) -> Counter[str]:
    """py-spy's raw (collapsed) output summed by area, in samples."""
    counts: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, n = line.rstrip().rpartition(" ")
        if not stack or not n.isdigit():
            continue  # py-spy writes a line per idle thread with no frames
        counts[area_of(stack.split(";"))] += int(n)
    return counts


def attach(py_spy: str, out: Path, rate: int) -> Callable[[subprocess.Popen], Callable[[], None]]:
    """A `watch` for bench.backfill.one_run: py-spy records the worker from
    its start; the returned call waits for py-spy to write its file (it
    does once the worker has exited)."""
    def watch(worker: subprocess.Popen) -> Callable[[], None]:
        spy = subprocess.Popen([py_spy, "record", "--pid", str(worker.pid), "--output", str(out), "--format", "raw",
                                "--rate", str(rate), "--nonblocking"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

        def done() -> None:
            try:
                _, err = spy.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                spy.kill()
                raise RuntimeError("py-spy did not finish writing its samples") from None
            if not out.exists():
                raise RuntimeError(f"py-spy wrote no samples: {err.decode(errors='replace').strip()}")
        return done
    return watch


def table(samples: dict[str, Counter[str]], rate: int) -> str:
    fixed, shipped = samples["fixed"], samples["shipped"]
    areas = [a for a, _ in AREAS] + [OTHER, WAITING]
    extra_cpu = sum(shipped[a] - fixed[a] for a in areas if a != WAITING)
    lines = ["| area | fixed thresholds, s | shipped defaults, s | extra, s | share of the extra |",
             "|---|---|---|---|---|"]
    for a in sorted(areas, key=lambda a: (a == WAITING, -(shipped[a] - fixed[a]))):
        extra = shipped[a] - fixed[a]
        share = f"{extra / extra_cpu:.0%}" if a != WAITING and extra_cpu else ""
        lines.append(f"| {a} | {fixed[a] / rate:.1f} | {shipped[a] / rate:.1f} | {extra / rate:+.1f} | {share} |")
    busy = {k: sum(c[a] for a in areas if a != WAITING) / rate for k, c in samples.items()}
    lines.append(f"| **busy, all areas but waiting** | {busy['fixed']:.1f} | {busy['shipped']:.1f} | "
                 f"{busy['shipped'] - busy['fixed']:+.1f} | 100% |")
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> None:
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists():
        sys.exit("py-spy is not installed: pip install .[bench]")
    out_dir = args.out_dir or Path(tempfile.mkdtemp(prefix="tierstream-profile-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    history = purchase_history(args.customers, args.days)
    samples: dict[str, Counter[str]] = {}
    for rules in ("fixed", "shipped"):
        raw = out_dir / f"worker-{rules}-p{args.partitions}.txt"
        run = await one_run(history, args.partitions, rules, args.broker, args.settle, 1800,
                            watch=attach(py_spy, raw, args.rate))
        samples[rules] = by_area(raw.read_text())
        log(f"{rules}: last decision {run['start_to_last_s']:.1f} s after the worker started "
            f"(py-spy attached); raw stacks in {raw}")
    print(f"\n{len(history)} events, {args.customers} customers, {args.partitions} partitions, {args.broker}; "
          f"py-spy at {args.rate} Hz\n")
    print(table(samples, args.rate))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=25_000)
    parser.add_argument("--days", type=int, default=270)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--broker", choices=("tansu", "kafka"), default="tansu")
    parser.add_argument("--settle", type=float, default=5.0, help="outputs still this long = the last decision")
    parser.add_argument("--rate", type=int, default=100, help="py-spy's samples per second")
    parser.add_argument("--out-dir", type=Path, default=None, help="keep py-spy's raw stacks here")
    asyncio.run(main(parser.parse_args()))

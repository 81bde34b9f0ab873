"""Where `tierstream dev` says what it started, so that `tierstream report`,
`campaigns`, `snapshot`, `tail`, `replay`, `rebuild-cache` and `config` in
another shell find the broker, Redis and API with no flags.

The file holds addresses only (never a token or a password: those come
from the environment), is readable by its owner alone, and counts only
while the `tierstream dev` that wrote it is alive. An explicit
TIERSTREAM_* variable always wins over it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

# Settings field -> the environment variable that overrides it.
FIELDS = {"broker": "TIERSTREAM_BROKER", "redis_url": "TIERSTREAM_REDIS_URL", "api_port": "TIERSTREAM_API_PORT",
          "partitions": "TIERSTREAM_PARTITIONS"}


def path() -> Path:
    explicit = os.environ.get("TIERSTREAM_DEV_STATE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "tierstream" / "dev.json"


def write(broker: str, redis_url: str, api_port: int, partitions: int, workdir: Path) -> Path:
    target = path()
    target.parent.mkdir(parents=True, exist_ok=True)
    doc = {"pid": os.getpid(), "broker": broker, "redis_url": redis_url, "api_port": api_port,
           "partitions": partitions, "workdir": str(workdir)}
    tmp = target.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(doc, out)
    os.replace(tmp, target)
    return target


def remove() -> None:
    """Forget the file, if it is ours (another dev may have started since)."""
    target = path()
    try:
        if json.loads(target.read_text()).get("pid") == os.getpid():
            target.unlink()
    except (OSError, ValueError):
        pass


def running() -> dict[str, Any] | None:
    """The addresses of a live `tierstream dev`, or None."""
    try:
        doc = json.loads(path().read_text())
        os.kill(int(doc["pid"]), 0)  # signal 0: is it alive (and ours to ask)?
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return doc


def defaults() -> dict[str, Any]:
    """Settings from a live `tierstream dev`, except those set explicitly in the environment."""
    doc = running()
    if doc is None:
        return {}
    return {name: doc[name] for name, env in FIELDS.items() if env not in os.environ and name in doc}

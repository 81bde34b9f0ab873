"""The configuration in force: the rules and campaigns every worker and
every tool evaluates with, as one versioned document.

A worker, a snapshot, a cache rebuild and the API that evaluated with rules
of their own once disagreed (a snapshot without the workers' campaigns spun
for ever on an open window). So the texts travel together as one document,
named by a hash of their content, published on its own topic
(stream.config_topic) and read from there by every process; each decision
carries the version that made it. Pure: no I/O here.
"""

from __future__ import annotations

import hashlib
import tomllib
from dataclasses import dataclass
from typing import Any

import orjson

from state.campaigns import parse_campaigns
from state.rules import Rules, parse_rules


@dataclass(frozen=True, slots=True)
class ConfigDocument:
    rules_text: str
    campaigns_text: str | None  # None: no campaigns
    rules_source: str = "<rules>"  # where the texts were read, for people; not part of the version
    campaigns_source: str | None = None

    @property
    def version(self) -> str:
        """A content hash: the same texts give the same version anywhere."""
        h = hashlib.sha256()
        h.update(b"rules\x00" + self.rules_text.encode())
        if self.campaigns_text is not None:
            h.update(b"\x00campaigns\x00" + self.campaigns_text.encode())
        return h.hexdigest()[:12]

    def rules(self) -> Rules:
        """The rules with the campaigns attached and the version set; a bad
        text raises RulesError naming its source and line."""
        rules = parse_rules(self.rules_text, self.rules_source)
        if self.campaigns_text is not None:
            rules = rules.with_campaigns(parse_campaigns(self.campaigns_text, self.campaigns_source or "<campaigns>",
                                                         rules.tier_names))
        return rules.with_version(self.version)


@dataclass(frozen=True, slots=True)
class Published:
    """A document as it stands on the config topic: who put it in force and when."""

    document: ConfigDocument
    by: str
    at_ms: int  # wall-clock time of publication
    # A live roll-out (`tierstream rules apply`, state.rollout): the event
    # time asked for (None: as soon as every partition can). Not one: a
    # version published whole, with every worker stopped.
    rollout: bool = False
    rollout_at_ms: int | None = None
    offset: int = -1  # where it stands on the config topic (read, not written)

    @property
    def key(self) -> str:
        """A roll-out's name (state.rollout): the same version may be rolled out again later."""
        return f"{self.document.version}@{self.offset}"

    def encode(self) -> bytes:
        d = self.document
        return orjson.dumps({"version": d.version, "rules": d.rules_text, "campaigns": d.campaigns_text,
                             "rules_source": d.rules_source, "campaigns_source": d.campaigns_source,
                             "by": self.by, "at_ms": self.at_ms,
                             **({"rollout": {"at_ms": self.rollout_at_ms}} if self.rollout else {})})

    @staticmethod
    def decode(value: bytes) -> Published:
        raw = orjson.loads(value)
        doc = ConfigDocument(raw["rules"], raw.get("campaigns"), raw.get("rules_source") or "<rules>",
                             raw.get("campaigns_source"))
        if raw.get("version") not in (None, doc.version):
            raise ValueError(f"config record says version {raw['version']} but its texts hash to {doc.version}")
        rollout = raw.get("rollout")
        return Published(doc, raw.get("by") or "", int(raw.get("at_ms") or 0), isinstance(rollout, dict),
                         rollout.get("at_ms") if isinstance(rollout, dict) else None)

    def summary(self) -> dict:
        """What GET /v1/config and `tierstream config show` give."""
        d = self.document
        return {"version": d.version, "published_by": self.by, "published_at_ms": self.at_ms,
                "rules_source": d.rules_source, "campaigns_source": d.campaigns_source,
                "rules": d.rules_text, "campaigns": d.campaigns_text}


class ConfigMismatch(RuntimeError):
    """This process's rules or campaigns are not the version in force."""


def mismatch_message(local: ConfigDocument, in_force: Published) -> str:
    return (
        f"this worker's rules ({local.rules_source}) and campaigns ({local.campaigns_source or 'none'}) are "
        f"version {local.version}, but version {in_force.document.version} is in force (published by "
        f"{in_force.by or 'a worker'}); workers never run two versions at once. Either start it with the files "
        "in force (`tierstream config show --rules-out RULES.toml --campaigns-out CAMPAIGNS.toml` writes them), "
        "or roll the change out: stop every worker, `tierstream config publish --by YOUR_NAME` with "
        "TIERSTREAM_RULES / TIERSTREAM_CAMPAIGNS set to the new files, then start the workers with them "
        "(docs/config.md)"
    )


def flat_toml(text: str | None) -> dict[str, Any]:
    """A TOML text as dotted keys; arrays of tables (tiers, campaigns) are
    keyed by their `name`, so reordering one is not a hundred changes."""
    out: dict[str, Any] = {}
    if text is None:
        return out

    def walk(value: Any, path: str) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{path}.{k}" if path else k)
        elif isinstance(value, list) and value and all(isinstance(v, dict) and "name" in v for v in value):
            out[f"{path}[order]"] = [v["name"] for v in value]
            for v in value:
                walk({k: x for k, x in v.items() if k != "name"} or {"": True}, f"{path}.{v['name']}")
        else:
            out[path.rstrip(".")] = value

    walk(tomllib.loads(text), "")
    return out


def changes(old: ConfigDocument | None, new: ConfigDocument) -> list[str]:
    """What a new version changed, in words: `scores.recency_days: [7, 30,
    90, 180] -> [7, 30, 60, 120]`, `tiers.vip: added`, `campaigns.win_back:
    removed`. Empty for the first version (nothing to compare with)."""
    if old is None:
        return []
    # A rules file cannot hold `campaigns` (parse_rules refuses it): one namespace fits both texts.
    before = {**flat_toml(old.rules_text), **flat_toml(old.campaigns_text)}
    after = {**flat_toml(new.rules_text), **flat_toml(new.campaigns_text)}
    out = []
    gone = {k.rsplit(".", 1)[0] for k in before.keys() - after.keys()}
    came = {k.rsplit(".", 1)[0] for k in after.keys() - before.keys()}
    for key in sorted(before.keys() | after.keys()):
        parent = key.rsplit(".", 1)[0]
        if key not in after:
            whole = parent in gone and not any(k.startswith(parent + ".") for k in after)
            out.append(f"{parent}: removed" if whole else f"{key}: removed (was {before[key]!r})")
        elif key not in before:
            whole = parent in came and not any(k.startswith(parent + ".") for k in before)
            out.append(f"{parent}: added" if whole else f"{key}: {after[key]!r} (new)")
        elif before[key] != after[key]:
            out.append(f"{key}: {before[key]!r} -> {after[key]!r}")
    return list(dict.fromkeys(out))


def config_history(versions: list[Published], outcomes: dict[str, Any] | None = None) -> list[dict]:
    """Every version published, newest first: when, by whom, and what it
    changed from the one in force before it (GET /v1/config/history). A
    live roll-out's entry says what became of it: `outcomes` maps its key to
    its state.rollout.Outcome (absent: still open)."""
    out = []
    previous: ConfigDocument | None = None
    for p in versions:
        d = p.document
        entry: dict[str, Any] = {"version": d.version, "published_by": p.by, "published_at_ms": p.at_ms,
                                 "rules_source": d.rules_source, "campaigns_source": d.campaigns_source,
                                 "changes": changes(previous, d)}
        if p.rollout:
            o = (outcomes or {}).get(p.key)
            entry["rollout"] = {
                "asked_for_ms": p.rollout_at_ms,
                "status": "open" if o is None else "in_force" if o.from_ms is not None else "refused",
                "in_force_from_ms": None if o is None else o.from_ms,
                **({"reason": o.reason} if o is not None and o.from_ms is None else {}),
            }
            if o is None or o.from_ms is None:
                out.append(entry)
                continue  # not in force: the next version's changes are counted from the one that is
        out.append(entry)
        previous = d
    return out[::-1]


def in_force(versions: list[Published], outcomes: dict[str, Any] | None = None) -> Published | None:
    """The version in force last: the latest published whole, or rolled out
    and accepted after it."""
    current = None
    for p in versions:
        if not p.rollout or getattr((outcomes or {}).get(p.key), "from_ms", None) is not None:
            current = p
    return current

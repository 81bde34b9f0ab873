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
from dataclasses import dataclass

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

    def encode(self) -> bytes:
        d = self.document
        return orjson.dumps({"version": d.version, "rules": d.rules_text, "campaigns": d.campaigns_text,
                             "rules_source": d.rules_source, "campaigns_source": d.campaigns_source,
                             "by": self.by, "at_ms": self.at_ms})

    @staticmethod
    def decode(value: bytes) -> Published:
        raw = orjson.loads(value)
        doc = ConfigDocument(raw["rules"], raw.get("campaigns"), raw.get("rules_source") or "<rules>",
                             raw.get("campaigns_source"))
        if raw.get("version") not in (None, doc.version):
            raise ValueError(f"config record says version {raw['version']} but its texts hash to {doc.version}")
        return Published(doc, raw.get("by") or "", int(raw.get("at_ms") or 0))

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

"""Baselines: record today's findings, then report only new ones.

A finding is identified by a fingerprint that survives unrelated changes: the rule code, the layer
name and a coarse key for the kind of finding (:attr:`Finding.key`, or the message with numbers and
parenthesised details removed), never the raw numbers. Retraining a little, re-seeding or
adding a layer elsewhere leaves the fingerprints of existing findings unchanged. The same
fingerprint is SARIF's ``partialFingerprints`` entry.

The baseline file is JSON, sorted and free of timestamps so that it diffs cleanly in review::

    {"baseline_version": 1, "tool": "initaudit",
     "findings": [{"fingerprint": "…", "rule": "IA104", "layer": "0.weight",
                   "key": "std # is #x the xavier std # expected before tanh",
                   "severity": "warning"}]}

Entries hold no raw numbers either, so a regenerated baseline diffs only where findings changed.

Matching counts multiplicities: an entry suppresses one current finding with its fingerprint.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from initaudit.errors import ConfigError
from initaudit.rule import Finding

BASELINE_VERSION = 1
FINGERPRINT_KEY = "initaudit/v1"  # name of the partialFingerprints entry in SARIF

_NUMBER = re.compile(r"(?<![A-Za-z_])[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")
_NUMBER_LIST = re.compile(r"#(?:\s*,\s*#)+")
_PARENS = re.compile(r"\([^()]*\)")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([:;,.])")


def message_key(message: str) -> str:
    """The kind of finding a message describes, without its numbers.

    Parenthesised details and everything after the first ';' are dropped, numbers become '#',
    lists of numbers one '#', case and spacing are normalised.
    """
    text = message
    while True:
        stripped = _PARENS.sub("", text)
        if stripped == text:
            break
        text = stripped
    text = text.split(";", 1)[0]
    text = _NUMBER.sub("#", text)
    text = _NUMBER_LIST.sub("#", text)
    text = " ".join(text.lower().split())
    return _SPACE_BEFORE_PUNCT.sub(r"\1", text).strip(" :,.")


def finding_key(finding: Finding) -> str:
    return finding.key if getattr(finding, "key", None) else message_key(finding.message)


def fingerprint(finding: Finding) -> str:
    """Stable identity of a finding: rule code + layer + coarse key (hex, 20 characters). A
    model-scope finding (``Finding.scope == "model"``) leaves the layer out: its layer only says
    where the effect is worst, which moves with the numbers."""
    layer = "*" if getattr(finding, "scope", "layer") == "model" else finding.layer
    raw = "\x1f".join((finding.rule, layer, finding_key(finding)))
    return hashlib.sha256(raw.encode()).hexdigest()[:20]


@dataclass
class Baseline:
    path: str
    entries: list[dict[str, Any]] = field(default_factory=list)

    def counts(self) -> Counter:
        return Counter(e["fingerprint"] for e in self.entries)


@dataclass
class BaselineResult:
    """What applying a baseline did: the findings still reported, those it suppressed, and the
    baseline entries that matched nothing (fixed since, or their layer is gone)."""

    kept: list[Finding]
    suppressed: list[Finding]
    stale: list[dict[str, Any]]

    def summary(self, path: str, entries: int) -> dict[str, Any]:
        return {"path": path, "entries": entries, "suppressed": len(self.suppressed),
                "no_longer_found": len(self.stale)}


def entry(finding: Finding) -> dict[str, Any]:
    layer = "*" if getattr(finding, "scope", "layer") == "model" else finding.layer
    return {"fingerprint": fingerprint(finding), "rule": finding.rule, "layer": layer,
            "key": finding_key(finding), "severity": finding.severity.value}


def dumps(findings: Iterable[Finding]) -> str:
    entries = sorted((entry(f) for f in findings), key=lambda e: (e["rule"], e["layer"], e["key"]))
    doc = {"baseline_version": BASELINE_VERSION, "tool": "initaudit", "findings": entries}
    return json.dumps(doc, indent=2, sort_keys=False) + "\n"


def write(path: str | Path, findings: Iterable[Finding]) -> int:
    """Write a baseline of ``findings``; returns the number of entries."""
    findings = list(findings)
    try:
        Path(path).write_text(dumps(findings))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot write the baseline: {exc.strerror or exc}") from exc
    return len(findings)


def load(path: str | Path) -> Baseline:
    """Read a baseline file; a missing or malformed one is an error (exit 2)."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{p}: baseline file not found (create it with --write-baseline {p})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: cannot read the baseline: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{p}: not a baseline file (invalid JSON: {exc.msg} at line {exc.lineno})") from exc
    except RecursionError:
        raise ConfigError(f"{p}: not a baseline file (JSON nested too deeply)") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("findings"), list):
        raise ConfigError(f"{p}: not a baseline file (expected an object with a 'findings' list)")
    if doc.get("baseline_version", BASELINE_VERSION) != BASELINE_VERSION:
        raise ConfigError(f"{p}: baseline_version {doc.get('baseline_version')!r} is not supported "
                          f"(this initaudit writes {BASELINE_VERSION})")
    entries = []
    for i, e in enumerate(doc["findings"]):
        if not isinstance(e, dict) or not isinstance(e.get("fingerprint"), str):
            raise ConfigError(f"{p}: findings[{i}] has no 'fingerprint'")
        entries.append(e)
    return Baseline(str(p), entries)


def apply(findings: list[Finding], baseline: Baseline) -> BaselineResult:
    """Split ``findings`` into new ones and those the baseline already records."""
    remaining = baseline.counts()
    kept, suppressed = [], []
    for f in findings:
        fp = fingerprint(f)
        if remaining[fp] > 0:
            remaining[fp] -= 1
            suppressed.append(f)
        else:
            kept.append(f)
    stale = []
    left = +remaining
    for e in baseline.entries:
        if left[e["fingerprint"]] > 0:
            left[e["fingerprint"]] -= 1
            stale.append(e)
    return BaselineResult(kept, suppressed, stale)

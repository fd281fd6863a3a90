"""Findings grouped by rule and cause, for the reports people read (terminal, Markdown, concise
summaries). JSON and SARIF keep one entry per layer.

A group is every finding of one rule, at one severity, whose message says the same thing once
numbers are set aside (:func:`initaudit.baseline.message_key`) and whose fix is the same: 150
layers initialised at std 0.01 before tanh are one group of 150, not 150 findings.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from initaudit.baseline import finding_key, message_key
from initaudit.rule import Finding, Severity


@dataclass
class FindingGroup:
    rule: str
    name: str
    category: str
    severity: Severity
    findings: list[Finding] = field(default_factory=list)

    @property
    def first(self) -> Finding:
        return self.findings[0]

    @property
    def layers(self) -> list[str]:
        return [f.layer for f in self.findings]

    @property
    def same_message(self) -> bool:
        """True when every finding of the group has the very same message."""
        return all(f.message == self.first.message for f in self.findings)

    @property
    def fix(self) -> str | None:
        return self.first.fix

    def layer_list(self, limit: int = 6) -> str:
        """``a, b, c, … (+N more)``: the first ``limit`` layers."""
        shown = ", ".join(self.layers[:limit])
        rest = len(self.layers) - limit
        return f"{shown}, … (+{rest} more)" if rest > 0 else shown

    def message(self) -> str:
        """The cause, from the group's first finding; says so when the numbers vary."""
        if len(self.findings) == 1 or self.same_message:
            return self.first.message
        return f"{self.first.message} (at {self.first.layer}; the values vary by layer)"


def group_findings(findings: Iterable[Finding]) -> list[FindingGroup]:
    """Groups in the order of their first finding (the report's order: severity, then depth)."""
    groups: dict[tuple, FindingGroup] = {}
    for f in findings:
        key = (f.rule, f.severity, finding_key(f), message_key(f.fix) if f.fix else None)
        group = groups.get(key)
        if group is None:
            group = groups[key] = FindingGroup(f.rule, f.name, f.category, f.severity)
        group.findings.append(f)
    return list(groups.values())


@dataclass
class RuleCount:
    rule: str
    name: str
    category: str
    count: int
    severities: Counter

    def severity_text(self) -> str:
        order = [s for s in ("error", "warning", "info") if self.severities[s]]
        return ", ".join(f"{self.severities[s]} {s}" for s in order)


def statistics(findings: Iterable[Finding]) -> list[RuleCount]:
    """Findings counted by rule (``--statistics``), most frequent first, then by code."""
    by_rule: dict[str, RuleCount] = {}
    for f in findings:
        rc = by_rule.setdefault(f.rule, RuleCount(f.rule, f.name, f.category, 0, Counter()))
        rc.count += 1
        rc.severities[f.severity.value] += 1
    return sorted(by_rule.values(), key=lambda r: (-r.count, r.rule))


def explain_hint(findings: Iterable[Finding], quote=lambda s: s) -> str | None:
    """``initaudit explain IA104 ...`` (a line every report ends with when there are findings);
    ``quote`` marks the command up (e.g. as Markdown code)."""
    codes = sorted({f.rule for f in findings})
    if not codes:
        return None
    more = f" (rules here: {', '.join(codes)})" if len(codes) > 1 else ""
    return (f"{quote('initaudit explain ' + codes[0])} says what a rule checks, why it matters and how "
            f"to fix it{more}")

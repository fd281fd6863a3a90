"""The public rule API: what a rule is, what it sees, and what it reports.

A rule is a subclass of :class:`Rule` with these class attributes:

``code``
    Capital-letter prefix plus digits, stable forever (``IA104``; a plugin owns its own prefix,
    e.g. ``XMP``, which is also the name of its entry point).
``name``
    kebab-case (``init-scale``); selectable and explainable like the code.
``category``
    exactly one of :data:`CATEGORIES` (docs/json-output.md lists them).
``severity``
    the default :class:`Severity`; users override it per rule (``[tool.initaudit.severity]``).
``options``
    ``{option: default}``; users set them per rule (``[tool.initaudit.options.CODE]``); the rule
    reads the effective values from ``self.opts``. Values must keep the default's type.
``applies_when_trained`` / ``needs_probe``
    False for rules about fresh initialisations (skipped at ``--stage trained``); True for rules
    that read ``ctx.probe`` (skipped when the probe did not run).
``needs_duplicates``
    True for rules that read ``ctx.analysis(name).duplicates``: the duplicate-row search (a
    third of a static pass) runs only when an enabled rule says so; otherwise it is None.
``scope``
    ``"layer"`` (default), or ``"model"`` for findings about the whole model whose layer only
    marks where the effect is worst; baseline and SARIF fingerprints then leave the layer out.

and a docstring whose first line is a one-sentence summary, followed by sections whose titles
are underlined with dashes, in this order::

    What it checks / Why it matters / Example / Fix / Options

``Why it matters`` gives the formula. ``Example`` and ``Fix`` hold a ```` ```python ```` block:
the example builds ``model`` (names available: ``torch``, ``nn``, ``math``) with the defect and
must trigger the rule; running the fix after it, in the same namespace, must clear it. The test
suite (tests/test_rule_docs.py) checks this for every discovered rule, plugins included.
``Options`` lists each option as ``name (type, default X): meaning`` or says ``None.``.

``check(ctx)`` receives an :class:`initaudit.context.Context` (``ctx.graph`` the format-neutral
model description, ``ctx.analysis(name)`` per-tensor statistics, ``ctx.signal`` the static depth
profile, ``ctx.probe`` the probe result or None, ``ctx.trained``) and yields :class:`Finding`
objects, usually through :meth:`Rule.finding`. A rule that raises is reported in the report's
``rule_errors`` and the audit goes on with the other rules.

Third-party rules use exactly this API and are discovered through the ``initaudit.rules``
entry-point group (the entry-point name is the code prefix the plugin owns; the value is a Rule
subclass, a list of them or a module) or ``--rules FILE`` / ``rules = [...]`` in the config.
The built-in rules arrive through the same entry point (``IA = "initaudit.rules:BUILTIN_RULES"``).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar

CATEGORIES = (
    "nonfinite", "constant", "symmetry", "scale", "mean-shift", "saturation", "dead-units",
    "vanishing", "exploding", "recurrent", "normalization", "unused", "uninitialized",
)

DOC_SECTIONS = ("What it checks", "Why it matters", "Example", "Fix", "Options")
CODE_RE = re.compile(r"^[A-Z]+[0-9]+$")
NAME_RE = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")


class Severity(str, Enum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"

    @property
    def rank(self) -> int:
        return {"info": 1, "warning": 2, "error": 3}[self.value]


@dataclass
class Finding:
    rule: str
    category: str
    severity: Severity
    layer: str
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)
    fix: str | None = None
    name: str = ""  # the rule's kebab-case name
    #: A coarse, number-free description of *what kind* of finding this is, for baseline and
    #: SARIF fingerprints (e.g. "explodes"). None: derived from the message with numbers and
    #: parenthesised details removed (initaudit.baseline.message_key).
    key: str | None = None
    #: "layer": about this layer. "model": about the whole model, ``layer`` only says where the
    #: effect is worst (which moves with the numbers), so fingerprints leave the layer out.
    scope: str = "layer"

    def to_json(self) -> dict[str, Any]:
        return {"rule": self.rule, "category": self.category, "severity": self.severity.value,
                "layer": self.layer, "message": self.message, "evidence": self.evidence,
                "fix": self.fix}


class Rule:
    """Base class of every rule, built-in or plugin. See the module docstring."""

    code: ClassVar[str]
    name: ClassVar[str]
    category: ClassVar[str]
    severity: ClassVar[Severity]
    options: ClassVar[dict[str, Any]] = {}
    #: False for rules about freshly initialised weights, skipped at ``--stage trained``.
    applies_when_trained: ClassVar[bool] = True
    #: True for rules that read the forward/backward probe.
    needs_probe: ClassVar[bool] = False
    #: True for rules that read ``TensorAnalysis.duplicates`` (the row search runs only then).
    needs_duplicates: ClassVar[bool] = False
    #: "layer" (default) or "model" for findings about the whole model whose ``layer`` only says
    #: where the effect is worst (depth-profile rules): baselines then match them by rule and kind.
    scope: ClassVar[str] = "layer"
    origin: ClassVar[str] = ""  # set on discovery: "initaudit", a distribution or a file

    def __init__(self, options: dict[str, Any] | None = None, severity: Severity | None = None):
        unknown = set(options or {}) - set(self.options)
        if unknown:
            raise ValueError(f"{self.code}: unknown option(s) {', '.join(sorted(unknown))}; "
                             f"valid: {', '.join(self.options) or 'none'}")
        self.opts: dict[str, Any] = {**self.options, **(options or {})}
        self.effective_severity = severity or self.severity

    def check(self, ctx: Any) -> Iterable[Finding]:  # ctx: initaudit.context.Context
        raise NotImplementedError

    def finding(self, layer: str, message: str, *, evidence: dict[str, Any] | None = None,
                fix: str | None = None, severity: Severity | None = None,
                key: str | None = None) -> Finding:
        """A finding of this rule; ``severity`` overrides the default for this one case only
        (e.g. downgraded to info where a normalisation follows). ``key`` optionally names the
        kind of finding for baselines (see :attr:`Finding.key`); the default is usually right."""
        default = type(self).severity
        if self.effective_severity is default:  # no user override: the rule's own grading
            sev = severity or default
        elif severity is not None and severity.rank < default.rank:
            # a case the rule itself downgrades (a legitimate pattern) never rises above it
            sev = min(severity, self.effective_severity, key=lambda s: s.rank)
        else:
            sev = self.effective_severity
        return Finding(self.code, self.category, sev, layer, message, evidence or {}, fix, self.name, key,
                       self.scope)

    @classmethod
    def doc(cls) -> str:
        return inspect.cleandoc(cls.__doc__ or "")

    @classmethod
    def summary(cls) -> str:
        return cls.doc().splitlines()[0] if cls.doc() else cls.name

    @classmethod
    def doc_sections(cls) -> dict[str, str]:
        """The docstring split into its titled sections (title lines underlined with dashes)."""
        return split_sections(cls.doc())

    @classmethod
    def code_block(cls, section: str) -> str:
        """The first ```python block of a docstring section."""
        text = cls.doc_sections().get(section, "")
        if "```" not in text:
            return ""
        body = text.split("```", 2)[1]
        return body.split("\n", 1)[1] if body.startswith("python") else body


def split_sections(doc: str) -> dict[str, str]:
    """A rule docstring split into its titled sections (title lines underlined with dashes);
    the text before the first title (the summary) is left out."""
    lines = doc.splitlines()
    sections: dict[str, list[str]] = {}
    current = None
    for i, line in enumerate(lines):
        if i + 1 < len(lines) and set(lines[i + 1].strip()) == {"-"} and line.strip():
            current = line.strip()
            sections[current] = []
            continue
        if set(line.strip()) == {"-"} and current is not None and not sections[current]:
            continue
        if current is not None:
            sections[current].append(line)
    return {k: "\n".join(v).strip() for k, v in sections.items()}


def validate_rule_class(rule: type) -> None:
    """Raise ValueError when a rule class does not follow the API."""
    for attr in ("code", "name", "category", "severity"):
        if not getattr(rule, attr, None):
            raise ValueError(f"rule {rule.__name__} has no {attr}")
    if not CODE_RE.match(str(rule.code)):
        raise ValueError(f"rule {rule.__name__}: code {rule.code!r} is not a prefix of capital letters "
                         "followed by digits (e.g. IA104, XMP001)")
    if not NAME_RE.match(str(rule.name)):
        raise ValueError(f"rule {rule.code}: name {rule.name!r} is not kebab-case (e.g. init-scale)")
    if rule.category not in CATEGORIES:
        raise ValueError(f"rule {rule.code}: category {rule.category!r} is not one of {', '.join(CATEGORIES)}")
    if not isinstance(rule.severity, Severity):
        raise ValueError(f"rule {rule.code}: severity must be a Severity")
    if not isinstance(rule.options, dict):
        raise ValueError(f"rule {rule.code}: options must be a dict of option name -> default")
    if rule.scope not in ("layer", "model"):
        raise ValueError(f"rule {rule.code}: scope must be 'layer' or 'model'")
    if getattr(rule, "check", None) is Rule.check:
        raise ValueError(f"rule {rule.code}: does not implement check(ctx)")


def iter_rule_classes(obj: Any) -> Iterator[type[Rule]]:
    """Rule classes found in an entry-point object: a Rule subclass, a list of them, or a module."""
    if isinstance(obj, type) and issubclass(obj, Rule):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            yield from iter_rule_classes(item)
    elif inspect.ismodule(obj):
        for value in vars(obj).values():
            if isinstance(value, type) and issubclass(value, Rule) and value is not Rule \
                    and value.__module__ == obj.__name__ and getattr(value, "code", None):
                yield value


def fmt(x: float) -> str:
    """A number for a message: 3 significant digits, scientific when tiny or huge."""
    if x != x or x in (float("inf"), float("-inf")):
        return str(x)
    if x == 0:
        return "0"
    if 1e-3 <= abs(x) < 1e4:
        return f"{x:.3g}" if abs(x) >= 1 else f"{x:.3f}" if abs(x) >= 0.01 else f"{x:.2g}"
    return f"{x:.2e}"

"""Rule discovery: the ``initaudit.rules`` entry-point group (built-ins and plugins alike) and
local rule files given with ``--rules``. A plugin that fails to load is reported, not fatal."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path

from initaudit.rule import Rule, iter_rule_classes, validate_rule_class

ENTRY_POINT_GROUP = "initaudit.rules"


@dataclass
class RuleSet:
    rules: dict[str, type[Rule]] = field(default_factory=dict)  # code -> class
    errors: list[str] = field(default_factory=list)  # one line per plugin that failed to load

    def add(self, cls: type[Rule], origin: str) -> None:
        try:
            validate_rule_class(cls)
        except ValueError as exc:
            self.errors.append(f"{origin}: {exc}")
            return
        if cls.code in self.rules and self.rules[cls.code] is not cls:
            self.errors.append(f"{origin}: rule code {cls.code} is already defined by "
                               f"{self.rules[cls.code].origin}; ignored")
            return
        if "origin" not in vars(cls):
            cls.origin = origin
        self.rules[cls.code] = cls

    def find(self, code_or_name: str) -> type[Rule] | None:
        key = code_or_name.strip()
        for cls in self.rules.values():
            if key.upper() == cls.code or key.lower() == cls.name:
                return cls
        return None

    def sorted(self) -> list[type[Rule]]:
        return sorted(self.rules.values(), key=lambda c: c.code)


def _load_file(path: Path) -> object:
    spec = importlib.util.spec_from_file_location(f"initaudit_local_rules_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def discover(rule_files: list[str | Path] = (), *, plugins: bool = True,
             classes: list[type[Rule]] = ()) -> RuleSet:
    """All rules: built-ins, installed plugins (unless ``plugins`` is False), local files, and
    rule ``classes`` passed in directly (the Python API's way to run a rule that is not installed,
    e.g. in a plugin's own test suite)."""
    ruleset = RuleSet()
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        dist = ep.dist.name if ep.dist else ep.value
        builtin = ep.value.startswith("initaudit.rules")
        if not plugins and not builtin:
            continue
        try:
            obj = ep.load()
        except Exception as exc:
            ruleset.errors.append(f"plugin {ep.name} ({dist}) failed to load: {type(exc).__name__}: {exc}")
            continue
        found = list(iter_rule_classes(obj))
        if not found:
            ruleset.errors.append(f"plugin {ep.name} ({dist}): entry point {ep.value} holds no Rule subclass")
        for cls in found:
            ruleset.add(cls, "initaudit" if builtin else dist)
    if not any(c.__module__.startswith("initaudit.rules") for c in ruleset.rules.values()):
        # Running from a source tree that was never installed: load the built-ins directly.
        from initaudit.rules import BUILTIN_RULES

        for cls in BUILTIN_RULES:
            ruleset.add(cls, "initaudit")
    seen: set[Path] = set()
    for file in rule_files:
        path = Path(file)
        if path.resolve() in seen:  # the same file from the config and from --rules
            continue
        seen.add(path.resolve())
        try:
            module = _load_file(path)
        except Exception as exc:
            ruleset.errors.append(f"{path}: failed to load rules: {type(exc).__name__}: {exc}")
            continue
        found = list(iter_rule_classes(module))
        if not found:
            ruleset.errors.append(f"{path}: defines no Rule subclass with a code")
        for cls in found:
            ruleset.add(cls, str(path))
    for cls in iter_rule_classes(list(classes)):
        ruleset.add(cls, cls.__module__)
    return ruleset

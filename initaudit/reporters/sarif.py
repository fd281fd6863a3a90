"""SARIF 2.1.0 output (``--format sarif`` / ``--sarif FILE``) for code-scanning services.

One run; ``tool.driver.rules`` holds the metadata of every rule that ran (id, name, short and
full description, help from the docstring, default level); each result carries its level
(error / warning / note), the model file as its artifact location (line 1: code-scanning
services need a region) and the layer as its logical location, and a stable fingerprint
(``partialFingerprints["initaudit/v1"]``, the same one baselines use) so that a service tracks the
same finding across commits. A factory target (``file.py:build``) points at the factory's source
file, at the line that defines the factory.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from initaudit import __version__
from initaudit.baseline import FINGERPRINT_KEY, fingerprint
from initaudit.report import Report, _jsonable, clean_json
from initaudit.rule import split_sections

SARIF_VERSION = "2.1.0"
SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
INFORMATION_URI = "https://pypi.org/project/initaudit/"
LEVELS = {"error": "error", "warning": "warning", "info": "note"}
SRCROOT = "%SRCROOT%"


def _artifact(report: Report, cwd: Path) -> tuple[str, str | None, int] | None:
    """(uri, uriBaseId, startLine) of the file the findings are about, or None (a live module)."""
    path_text = report.source_path
    if not path_text and Path(report.target).is_file():
        path_text = report.target
    if not path_text:
        return None
    path = Path(path_text)
    line = _factory_line(report.target, path)
    absolute = (path if path.is_absolute() else cwd / path).resolve()
    try:
        return absolute.relative_to(cwd.resolve()).as_posix(), SRCROOT, line
    except ValueError:
        return absolute.as_uri(), None, line


def _factory_line(target: str, path: Path) -> int:
    """For ``file.py:build``, the line that defines ``build``; otherwise 1."""
    if ":" not in target or path.suffix != ".py":
        return 1
    name = target.rpartition(":")[2]
    try:
        for i, text in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if re.match(rf"\s*(async\s+)?def\s+{re.escape(name)}\s*\(|\s*class\s+{re.escape(name)}\b|"
                        rf"{re.escape(name)}\s*=", text):
                return i
    except OSError:
        pass
    return 1


def _rule_descriptor(code: str, meta: dict[str, Any]) -> dict[str, Any]:
    doc = meta.get("doc") or meta.get("summary") or code
    sections = split_sections(doc)
    full = sections.get("What it checks") or meta.get("summary") or code
    help_text = "\n\n".join(f"{title}\n{body}" for title, body in sections.items()) or doc
    title = f"{code} {meta.get('name', '')}".strip()
    level = LEVELS.get(meta.get("severity", "warning"), "warning")
    return {
        "id": code,
        "name": meta.get("name") or code,
        "shortDescription": {"text": meta.get("summary") or code},
        "fullDescription": {"text": " ".join(full.split())},
        "help": {"text": help_text, "markdown": f"## {title}\n\n{doc}"},
        "defaultConfiguration": {"level": level},
        "properties": {"category": meta.get("category"), "origin": meta.get("origin"),
                       "tags": ["initaudit", meta.get("category") or "uncategorised"],
                       "problem.severity": {"error": "error", "warning": "warning"}.get(
                           meta.get("severity"), "recommendation")},
    }


def to_sarif(report: Report, cwd: str | Path | None = None) -> dict[str, Any]:
    """The SARIF log (a dict) of ``report``; URIs are relative to ``cwd`` (the repository root in CI)."""
    cwd = Path(cwd) if cwd is not None else Path.cwd()
    codes = sorted(set(report.rules_run) | {f.rule for f in report.findings})
    meta = report.rule_meta
    rules = [_rule_descriptor(c, meta.get(c, {})) for c in codes]
    index = {c: i for i, c in enumerate(codes)}
    artifact = _artifact(report, cwd)
    results = []
    for f in report.findings:
        text = f.message if not f.fix else f"{f.message}. Fix: {f.fix}"
        location: dict[str, Any] = {"logicalLocations": [
            {"name": f.layer, "fullyQualifiedName": f.layer, "kind": "member"}]}
        if artifact is not None:
            uri, base, line = artifact
            art_loc: dict[str, Any] = {"uri": uri, "index": 0}
            if base:
                art_loc["uriBaseId"] = base
            location["physicalLocation"] = {"artifactLocation": art_loc, "region": {"startLine": line}}
        results.append({
            "ruleId": f.rule,
            "ruleIndex": index[f.rule],
            "level": LEVELS[f.severity.value],
            "kind": "fail",
            "message": {"text": f"{f.layer}: {text}"},
            "locations": [location],
            "partialFingerprints": {FINGERPRINT_KEY: fingerprint(f)},
            "properties": {"category": f.category, "layer": f.layer, "evidence": f.evidence, "fix": f.fix},
        })
    notifications = [{"level": "error", "message": {"text": err}} for err in report.rule_errors]
    notifications += [{"level": "note", "message": {"text": note}} for note in report.notes]
    run: dict[str, Any] = {
        "tool": {"driver": {"name": "initaudit", "version": __version__, "semanticVersion": __version__,
                            "informationUri": INFORMATION_URI, "rules": rules}},
        "invocations": [{"executionSuccessful": True, "toolExecutionNotifications": notifications}],
        "results": results,
        "properties": {"target": report.target, "format": report.format, "stage": report.stage,
                       "summary": report.summary(), "suppressed": report.suppressed,
                       "baseline": report.baseline},
    }
    if artifact is not None:
        uri, base, _ = artifact
        loc: dict[str, Any] = {"uri": uri}
        if base:
            loc["uriBaseId"] = base
            run["originalUriBaseIds"] = {SRCROOT: {"uri": cwd.resolve().as_uri() + "/"}}
        run["artifacts"] = [{"location": loc, "roles": ["analysisTarget"]}]
    return clean_json({"$schema": SARIF_SCHEMA, "version": SARIF_VERSION, "runs": [run]})


def dumps(report: Report, cwd: str | Path | None = None) -> str:
    return json.dumps(to_sarif(report, cwd), indent=2, allow_nan=False, default=_jsonable) + "\n"

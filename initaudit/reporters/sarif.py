"""SARIF 2.1.0 output (``--format sarif`` / ``--sarif FILE``) for code-scanning services.

One run; ``tool.driver.rules`` holds the metadata of every rule that ran (id, name, short and
full description, help from the docstring, default level); each result carries its level
(error / warning / note), the model file as its artifact location (line 1: code-scanning
services need a region) and the layer as its logical location, and a stable fingerprint
(``partialFingerprints["initaudit/v1"]``, the same one baselines use) so that a service tracks the
same finding across commits. A factory target (``file.py:build``) points at the factory's source
file, at the line that defines the factory.

Artifact URIs are relative to the git top level that holds the file, with ``uriBaseId``
``%SRCROOT%`` (what GitHub code scanning resolves against the checkout), whatever folder the job
runs from; ``informationUri`` is the project's URL from the package metadata.
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
#: The project's page when the installed metadata names none ([project.urls] in pyproject.toml).
DEFAULT_INFORMATION_URI = "https://github.com/initaudit/initaudit"
LEVELS = {"error": "error", "warning": "warning", "info": "note"}
SRCROOT = "%SRCROOT%"


def information_uri() -> str:
    """The project's URL from the installed package metadata (Project-URL), else the default."""
    from importlib.metadata import PackageNotFoundError, metadata

    try:
        urls = metadata("initaudit").get_all("Project-URL") or []
    except PackageNotFoundError:
        urls = []
    by_label = {label.strip().lower(): url.strip() for label, _, url in (u.partition(",") for u in urls)}
    for label in ("repository", "source", "homepage", "documentation"):
        if by_label.get(label):
            return by_label[label]
    return DEFAULT_INFORMATION_URI


def repository_root(path: Path) -> Path | None:
    """The git top level holding ``path`` (the nearest folder with a ``.git`` entry: a folder, or
    a file in worktrees and submodules), or None outside any repository."""
    for folder in (path if path.is_dir() else path.parent, *path.parents):
        if (folder / ".git").exists():
            return folder
    return None


def _artifact(report: Report, cwd: Path, root: Path | None = None) -> tuple[str, str | None, int, Path | None] | None:
    """(uri, uriBaseId, startLine, root) of the file the findings are about, or None (a live
    module). URIs are relative to ``root``, by default the file's git top level (code scanning
    resolves %SRCROOT% to the repository's checkout, wherever the job ran from), else to
    ``cwd``; a file outside both gets an absolute ``file://`` URI."""
    path_text = report.source_path
    if not path_text and Path(report.target).is_file():
        path_text = report.target
    if not path_text:
        return None
    path = Path(path_text)
    line = _factory_line(report.target, path)
    absolute = (path if path.is_absolute() else cwd / path).resolve()
    for base in (root, None if root else repository_root(absolute), None if root else cwd):
        if base is None:
            continue
        try:
            return absolute.relative_to(base.resolve()).as_posix(), SRCROOT, line, base.resolve()
        except ValueError:
            continue
    return absolute.as_uri(), None, line, None


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


def to_sarif(report: Report, cwd: str | Path | None = None, root: str | Path | None = None) -> dict[str, Any]:
    """The SARIF log (a dict) of ``report``. URIs are relative to ``root`` if given, else to the
    git top level holding the file, else to ``cwd`` (default: the current folder)."""
    return to_sarif_many([report], cwd, root)


def _results(report: Report, index: dict[str, int], artifact: tuple | None, artifact_index: int) -> list:
    results = []
    for f in report.findings:
        text = f.message if not f.fix else f"{f.message}. Fix: {f.fix}"
        location: dict[str, Any] = {"logicalLocations": [
            {"name": f.layer, "fullyQualifiedName": f.layer, "kind": "member"}]}
        if artifact is not None:
            uri, base, line, _ = artifact
            art_loc: dict[str, Any] = {"uri": uri, "index": artifact_index}
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
    return results


def to_sarif_many(reports: list[Report], cwd: str | Path | None = None,
                  root: str | Path | None = None) -> dict[str, Any]:
    """One SARIF run for several audits (``initaudit files``): the rules of all, one artifact per
    file, every result pointing at its file."""
    cwd = Path(cwd) if cwd is not None else Path.cwd()
    root_path = Path(root) if root is not None else None
    codes = sorted({c for r in reports for c in r.rules_run} | {f.rule for r in reports for f in r.findings})
    meta: dict[str, Any] = {}
    for r in reports:
        meta.update({k: v for k, v in r.rule_meta.items() if k not in meta})
    rules = [_rule_descriptor(c, meta.get(c, {})) for c in codes]
    index = {c: i for i, c in enumerate(codes)}
    results, artifacts, notifications = [], [], []
    roots: set[Path] = set()
    for report in reports:
        artifact = _artifact(report, cwd, root_path)
        results += _results(report, index, artifact, len(artifacts))
        if artifact is not None:
            uri, base, _, base_root = artifact
            loc: dict[str, Any] = {"uri": uri}
            if base:
                loc["uriBaseId"] = base
                roots.add(base_root)
            artifacts.append({"location": loc, "roles": ["analysisTarget"]})
        notifications += [{"level": "error", "message": {"text": err}} for err in report.rule_errors]
        notifications += [{"level": "note", "message": {"text": note}} for note in report.notes]
    properties: dict[str, Any] = {}
    if len(reports) == 1:
        first = reports[0]
        properties = {"target": first.target, "format": first.format, "stage": first.stage,
                      "summary": first.summary(), "suppressed": first.suppressed, "baseline": first.baseline}
    elif reports:
        properties = {"targets": [{"target": r.target, "format": r.format, "stage": r.stage,
                                   "summary": r.summary()} for r in reports]}
    run: dict[str, Any] = {
        "tool": {"driver": {"name": "initaudit", "version": __version__, "semanticVersion": __version__,
                            "informationUri": information_uri(), "rules": rules}},
        "invocations": [{"executionSuccessful": True, "toolExecutionNotifications": notifications}],
        "results": results,
        "properties": properties,
    }
    if roots:  # one %SRCROOT% per run: files in several repositories keep their own (first) root
        run["originalUriBaseIds"] = {SRCROOT: {"uri": sorted(roots)[0].as_uri() + "/"}}
    if artifacts:
        run["artifacts"] = artifacts
    return clean_json({"$schema": SARIF_SCHEMA, "version": SARIF_VERSION, "runs": [run]})


def dumps(report: Report | list[Report], cwd: str | Path | None = None) -> str:
    doc = to_sarif_many(report if isinstance(report, list) else [report], cwd)
    return json.dumps(doc, indent=2, allow_nan=False, default=_jsonable) + "\n"

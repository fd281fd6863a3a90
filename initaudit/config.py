"""Configuration: ``[tool.initaudit]`` in ``pyproject.toml``, merged with command-line flags.

The file is found by walking up from the target (the first ``pyproject.toml`` with a
``[tool.initaudit]`` table), or given with ``--config FILE`` (a ``pyproject.toml``, or a TOML
file whose top level holds the same keys). ``--isolated`` ignores every config file.

.. code-block:: toml

    [tool.initaudit]
    select = ["ALL"]                 # codes, code prefixes (IA1), kebab-case names or categories
    extend-select = []
    ignore = ["mean-shift"]
    fail-on = "warning"              # error | warning | info | never
    stage = "auto"                   # auto | init | trained
    rules = ["tools/my_rules.py"]    # local rule files, relative to this file
    plugins = true                   # load rule plugins from installed packages

    [tool.initaudit.per-layer-ignores]
    "head.*" = ["IA104"]             # fnmatch glob on the finding's layer -> selectors

    [tool.initaudit.options.IA104]   # per-rule options, by code or name
    tolerance = 2.0

    [tool.initaudit.severity]
    init-scale = "error"

    [tool.initaudit.probe]
    enabled = true
    batch-size = 64
    seed = 0
    device = "cpu"

Precedence: command-line flags win. ``--select``, ``--fail-on``, ``--stage`` and
``--no-plugins`` replace the file's value; ``--extend-select``, ``--ignore`` and ``--rules`` add to
it (and a file ``ignore`` entry that ``--select``/``--extend-select`` names exactly is dropped).
Unknown keys and bad values are :class:`~initaudit.errors.ConfigError` (exit 2) naming the key
and suggesting the closest valid one; so are unknown rules in selectors, options and severities
(:func:`check_rule_references`, run by the engine once the rules are discovered).
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import tomllib
from pathlib import Path
from typing import Any

from initaudit.errors import ConfigError
from initaudit.report import FAIL_ON
from initaudit.rule import CATEGORIES, Rule, Severity

PYPROJECT = "pyproject.toml"
DEFAULT = "default"
COMMAND_LINE = "command line"

# [tool.initaudit] key -> Settings field
KEYS: dict[str, str] = {
    "select": "select", "extend-select": "extend_select", "ignore": "ignore",
    "per-layer-ignores": "per_layer_ignores", "options": "rule_options", "severity": "severity",
    "fail-on": "fail_on", "stage": "stage", "rules": "rule_files", "plugins": "plugins",
    "probe": "",  # a table, see PROBE_KEYS
}
# [tool.initaudit.probe] key -> Settings field
PROBE_KEYS: dict[str, str] = {
    "enabled": "probe_enabled", "batch-size": "probe_batch_size", "seed": "probe_seed",
    "device": "probe_device",
}
# Settings field -> how a user names it (config key, command-line flag)
FIELD_KEYS: dict[str, str] = {**{f: k for k, f in KEYS.items() if f},
                              **{f: f"probe.{k}" for k, f in PROBE_KEYS.items()}}
FLAGS: dict[str, str] = {
    "select": "--select", "extend_select": "--extend-select", "ignore": "--ignore",
    "fail_on": "--fail-on", "stage": "--stage", "rule_files": "--rules", "plugins": "--no-plugins",
    "baseline": "--baseline", "probe_enabled": "--probe/--no-probe", "probe_batch_size": "--batch-size",
    "probe_seed": "--seed", "probe_device": "--device",
}
_ADDITIVE = ("extend_select", "ignore", "rule_files")  # flags that add to the file's list
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?|mps|xpu(:\d+)?)$")


def _suggest(word: str, choices: list[str] | tuple[str, ...]) -> str:
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    if not match:
        match = difflib.get_close_matches(word.lower(), [c.lower() for c in choices], n=1, cutoff=0.5)
        match = [c for c in choices if c.lower() in match][:1]
    return f"; did you mean {match[0]!r}?" if match else f"; valid: {', '.join(choices)}"


def _suggest_rule(word: str, choices: list[str]) -> str:
    """A close rule code, name or category, else a pointer to `initaudit rules` (never the
    whole list of every code and name)."""
    unique = list(dict.fromkeys(choices))
    match = difflib.get_close_matches(word, unique, n=1, cutoff=0.6) or \
        difflib.get_close_matches(word.upper(), unique, n=1, cutoff=0.6) or \
        difflib.get_close_matches(word.lower(), unique, n=1, cutoff=0.6)
    if match:
        return f"; did you mean {match[0]!r}?"
    return "; `initaudit rules` lists the codes and names (a code prefix such as IA1 or a category also works)"


# --- finding and reading the file ----------------------------------------------------------------

def search_start(target: str | Path | None, cwd: Path | None = None) -> Path:
    """The folder to start the upward search from: the target's folder (a factory file's folder
    for ``file.py:factory``), the current folder for importable specs and live modules."""
    cwd = cwd or Path.cwd()
    if target is None or not isinstance(target, (str, Path)):
        return cwd
    spec = str(target)
    path = Path(spec)
    if not path.exists() and ":" in spec:
        left = spec.rpartition(":")[0]
        if left.endswith(".py") or "/" in left or "\\" in left:
            path = Path(left)
        else:
            return cwd
    path = path if path.is_absolute() else cwd / path
    if path.is_dir():
        return path
    return path.parent if path.parent.exists() else cwd


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); TOML files are UTF-8") from None
    except RecursionError:
        raise ConfigError(f"{path}: invalid TOML: nested too deeply") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror or exc}") from exc


def find_config(target: str | Path | None = None, cwd: Path | None = None) -> Path | None:
    """The first ``pyproject.toml`` with a ``[tool.initaudit]`` table, walking up from the target."""
    start = search_start(target, cwd).resolve()
    for folder in (start, *start.parents):
        candidate = folder / PYPROJECT
        if candidate.is_file() and "initaudit" in _read_toml(candidate).get("tool", {}):
            return candidate
    return None


def project_config(cwd: Path | None = None) -> Path | None:
    """The config of the project the user works in: the one found walking up from the
    current folder."""
    return find_config(None, cwd)


def rules_trusted(path: Path, explicit: bool, trust: bool, cwd: Path | None = None) -> bool:
    """Whether a config file may name rule files (Python code initaudit imports).

    Only the project the user works in may: a file given with ``--config``, the config found
    from the current folder, or any config with the explicit opt-in (``--trust-config-rules``).
    A ``pyproject.toml`` found by walking up from the *target* may have come with a downloaded
    model or been planted in a shared parent folder; importing the files it names would run
    code from files that travel with a model."""
    if explicit or trust:
        return True
    own = project_config(cwd)
    return own is not None and own.resolve() == path.resolve()


_NOT_LOADED = "not loaded: "


def _untrusted_rules_note(path: Path, files: list[str], cwd: Path | None) -> str:
    where = (cwd or Path.cwd()).resolve()
    return (f"{path}: rules = {files!r} {_NOT_LOADED}this config was found next to the target, not "
            f"in the project of the current folder ({where}), and a config that travels with a model "
            "must not run code; run initaudit from that project, pass --config "
            f"{path}, or --trust-config-rules to load them")


def read_table(path: Path) -> tuple[dict[str, Any], str]:
    """The initaudit table of a config file, and how to name it in messages."""
    doc = _read_toml(path)
    if "tool" in doc or path.name == PYPROJECT:
        table = doc.get("tool", {}).get("initaudit")
        if table is None:
            raise ConfigError(f"{path}: has no [tool.initaudit] table")
        section = "tool.initaudit"
    else:  # a dedicated file (initaudit.toml): the keys at the top level
        table, section = doc, ""
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [tool.initaudit] must be a table")
    return table, section


# --- validating values ---------------------------------------------------------------------------

class _Where:
    """Names a key in error messages: ``path: [tool.initaudit] key: cause``."""

    def __init__(self, path: Path, section: str):
        self.path, self.section = path, section

    def error(self, key: str, cause: str, table: str = "") -> ConfigError:
        section = ".".join(p for p in (self.section, table) if p)
        where = f"[{section}] " if section else ""
        return ConfigError(f"{self.path}: {where}{key}: {cause}")

    def unknown(self, key: str, valid: list[str] | tuple[str, ...], table: str = "") -> ConfigError:
        section = ".".join(p for p in (self.section, table) if p)
        where = f"[{section}] " if section else ""
        return ConfigError(f"{self.path}: {where}unknown key {key!r}{_suggest(key, valid)}")


def _str_list(value: Any, key: str, where: _Where, table: str = "") -> list[str]:
    if isinstance(value, str) or not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise where.error(key, f"expected a list of strings, e.g. [\"IA104\"], got {value!r}", table)
    if any(not v.strip() for v in value):
        raise where.error(key, "empty string in the list", table)
    return [v.strip() for v in value]


def _choice(value: Any, key: str, choices: tuple[str, ...], where: _Where, table: str = "") -> str:
    if not isinstance(value, str) or value not in choices:
        close = difflib.get_close_matches(value, choices, n=1, cutoff=0.5) if isinstance(value, str) else []
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise where.error(key, f"{value!r} is not one of {', '.join(choices)}{hint}", table)
    return value


def _bool(value: Any, key: str, where: _Where, table: str = "") -> bool:
    if not isinstance(value, bool):
        raise where.error(key, f"expected true or false, got {value!r}", table)
    return value


def _int(value: Any, key: str, where: _Where, minimum: int, table: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise where.error(key, f"expected an integer >= {minimum}, got {value!r}", table)
    return value


def parse_table(table: dict[str, Any], path: Path, section: str = "tool.initaudit") -> dict[str, Any]:
    """Validate a ``[tool.initaudit]`` table; returns ``{Settings field: value}``.

    Rule codes and option names are checked later, against the discovered rules."""
    from initaudit.engine import STAGES

    where = _Where(path, section)
    out: dict[str, Any] = {}
    for key, value in table.items():
        if key not in KEYS:
            raise where.unknown(key, list(KEYS))
        field = KEYS[key]
        if key in ("select", "extend-select", "ignore"):
            out[field] = _str_list(value, key, where)
        elif key == "per-layer-ignores":
            if not isinstance(value, dict):
                raise where.error(key, "expected a table of layer glob = [rules]")
            out[field] = {glob: _str_list(sel, f'"{glob}"', where, key) for glob, sel in value.items()}
        elif key == "options":
            if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
                raise where.error(key, "expected tables [tool.initaudit.options.CODE] of option = value")
            out[field] = {rule: dict(opts) for rule, opts in value.items()}
        elif key == "severity":
            if not isinstance(value, dict):
                raise where.error(key, "expected a table of rule = \"error\" | \"warning\" | \"info\"")
            out[field] = {rule: _choice(sev, rule, tuple(s.value for s in Severity), where, key)
                          for rule, sev in value.items()}
        elif key == "fail-on":
            out[field] = _choice(value, key, FAIL_ON, where)
        elif key == "stage":
            out[field] = _choice(value, key, STAGES, where)
        elif key == "rules":
            files = []
            for item in _str_list(value, key, where):
                p = Path(item).expanduser()
                p = p if p.is_absolute() else path.parent / p
                if not p.is_file():
                    raise where.error(key, f"no such rule file {item!r} (paths are relative to {path.name})")
                files.append(str(p))
            out[field] = files
        elif key == "plugins":
            out[field] = _bool(value, key, where)
        elif key == "probe":
            if not isinstance(value, dict):
                raise where.error(key, "expected a table [tool.initaudit.probe]")
            for pkey, pvalue in value.items():
                if pkey not in PROBE_KEYS:
                    raise where.unknown(pkey, list(PROBE_KEYS), "probe")
                pfield = PROBE_KEYS[pkey]
                if pkey == "enabled":
                    out[pfield] = _bool(pvalue, pkey, where, "probe")
                elif pkey == "batch-size":
                    out[pfield] = _int(pvalue, pkey, where, 1, "probe")
                elif pkey == "seed":
                    out[pfield] = _int(pvalue, pkey, where, 0, "probe")
                elif pkey == "device":
                    if not isinstance(pvalue, str) or not _DEVICE.match(pvalue):
                        raise where.error(pkey, f"{pvalue!r} is not a device (cpu, cuda, cuda:N, mps, auto)",
                                          "probe")
                    out[pfield] = pvalue
    return out


# --- merging with the command line ---------------------------------------------------------------

def resolve(target: str | Path | None = None, *, config_file: str | Path | None = None,
            isolated: bool = False, cli: dict[str, Any] | None = None, cwd: Path | None = None):
    """Settings for one audit: defaults, then the config file, then command-line values.

    ``cli`` maps Settings fields to the values of the flags the user gave (leave out flags that
    were not given). Returns a :class:`initaudit.engine.Settings` whose ``sources`` says where
    each field came from and whose ``config_path`` names the file read, if any.
    """
    from initaudit.engine import Settings

    settings = Settings()
    cli = {k: v for k, v in (cli or {}).items() if v is not None}
    unknown = set(cli) - {f.name for f in dataclasses.fields(Settings)}
    if unknown:
        raise TypeError(f"resolve(): unknown Settings field(s) {', '.join(sorted(unknown))}")
    sources = {f.name: DEFAULT for f in dataclasses.fields(Settings) if f.name in FIELD_KEYS}
    path: Path | None = None
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found (--config)")
    elif not isolated:
        path = find_config(target, cwd)
    from_file: dict[str, Any] = {}
    if path is not None:
        table, section = read_table(path)
        trust = bool(cli.get("trust_config_rules", False))
        if "rules" in table and not rules_trusted(path, config_file is not None, trust, cwd):
            files = _str_list(table["rules"], "rules", _Where(path, section))
            table = {k: v for k, v in table.items() if k != "rules"}
            settings.config_notes.append(_untrusted_rules_note(path, files, cwd))
        from_file = parse_table(table, path, section)
        label = str(path)
        for fld, value in from_file.items():
            setattr(settings, fld, value)
            sources[fld] = label
    for fld, value in cli.items():
        if fld in _ADDITIVE and fld in from_file:
            setattr(settings, fld, [*from_file[fld], *value])
            sources[fld] = f"{sources[fld]} + {COMMAND_LINE}"
        else:
            setattr(settings, fld, value)
            sources[fld] = COMMAND_LINE
    reselected = {s.upper() for s in [*cli.get("select", []), *cli.get("extend_select", [])]}
    if reselected and "ignore" in from_file:  # flags win: a rule named on the command line runs
        settings.ignore = [s for s in from_file["ignore"] if s.upper() not in reselected] + cli.get("ignore", [])
    settings.sources = sources
    settings.config_path = str(path) if path else None
    settings.validate()
    return settings


# --- rule references (after discovery) -----------------------------------------------------------

def _origin(settings: Any, field: str) -> str:
    """How to name a setting in an error: ``path: [tool.initaudit] key``, ``--flag`` or ``key``."""
    key = FIELD_KEYS.get(field, field)
    source = getattr(settings, "sources", {}).get(field, DEFAULT)
    if source == DEFAULT:
        return key
    if source == COMMAND_LINE:
        return FLAGS.get(field, key)
    if source.endswith(f" + {COMMAND_LINE}"):
        return f"{source[: -len(COMMAND_LINE) - 3]}: [tool.initaudit] {key} or {FLAGS.get(field, key)}"
    return f"{source}: [tool.initaudit] {key}"


def _rule_words(ruleset: Any) -> list[str]:
    return [*(c.code for c in ruleset.sorted()), *(c.name for c in ruleset.sorted()), *CATEGORIES]


def _find_rule(ruleset: Any, key: str) -> type[Rule] | None:
    return ruleset.find(key)


def _selector_known(selector: str, ruleset: Any) -> bool:
    from initaudit.engine import selector_matches

    s = selector.strip()
    if not s:
        return False
    if s.upper() == "ALL" or s.lower() in CATEGORIES:
        return True
    return any(selector_matches(s, cls) for cls in ruleset.rules.values())


def _type_ok(default: Any, value: Any) -> bool:
    if default is None:
        return True
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, (list, tuple)):
        return isinstance(value, (list, tuple))
    return isinstance(value, type(default))


def check_rule_references(settings: Any, ruleset: Any) -> list[str]:
    """Every rule named in selectors, per-layer ignores, options and severities must exist, and
    every option must be one the rule declares, with the default's type. Raises ConfigError;
    returns notes for references tolerated because plugins are off (the rule may live in one)."""
    notes: list[str] = []
    failed = f" (note: {'; '.join(ruleset.errors)})" if ruleset.errors else ""

    notes.extend(getattr(settings, "config_notes", []))
    rules_ignored = any(_NOT_LOADED in n for n in getattr(settings, "config_notes", []))

    def unknown(field: str, what: str, word: str, choices: list[str]) -> None:
        # With plugins off, a config file may name a plugin's rules; a flag is a request (exit 2).
        asked = settings.sources.get(field) == COMMAND_LINE and field in ("select", "extend_select")
        if (not settings.plugins and not asked) or rules_ignored:
            why = "plugins are off" if not settings.plugins else "the config's rule files were not loaded"
            notes.append(f"{_origin(settings, field)}: {what} {word!r} matches no rule ({why})")
            return
        off = " (plugins are off: --no-plugins)" if not settings.plugins else ""
        raise ConfigError(f"{_origin(settings, field)}: unknown {what} {word!r}{off}"
                          f"{_suggest_rule(word, choices)}{failed}")

    words = _rule_words(ruleset)
    for field in ("select", "extend_select", "ignore"):
        for sel in getattr(settings, field):
            if not _selector_known(sel, ruleset):
                unknown(field, "rule", sel, ["ALL", *words])
    for glob, selectors in settings.per_layer_ignores.items():
        for sel in selectors:
            if not _selector_known(sel, ruleset):
                unknown("per_layer_ignores", f"rule (for {glob!r})", sel, words)
    rule_keys = [*(c.code for c in ruleset.sorted()), *(c.name for c in ruleset.sorted())]
    severity: dict[str, str] = {}
    for key, value in settings.severity.items():
        cls = _find_rule(ruleset, key)
        if cls is None:
            unknown("severity", "rule", key, rule_keys)
            severity[key] = value
        else:
            severity[cls.code] = value
    settings.severity = severity  # keyed by code from here on, however the user named the rule
    options: dict[str, dict[str, Any]] = {}
    for key, opts in settings.rule_options.items():
        cls = _find_rule(ruleset, key)
        if cls is None:
            unknown("rule_options", "rule", key, rule_keys)
            options[key] = opts
            continue
        if isinstance(opts, dict):
            options[cls.code] = {**options.get(cls.code, {}), **opts}
        if not isinstance(opts, dict):
            raise ConfigError(f"{_origin(settings, 'rule_options')}.{key}: expected a table of option = value")
        for opt, value in opts.items():
            if opt not in cls.options:
                valid = list(cls.options) or ["(this rule has no options)"]
                raise ConfigError(f"{_origin(settings, 'rule_options')}.{key}: unknown option {opt!r} of "
                                  f"{cls.code}{_suggest(opt, valid)}")
            default = cls.options[opt]
            if not _type_ok(default, value):
                raise ConfigError(f"{_origin(settings, 'rule_options')}.{key}: option {opt} expects "
                                  f"{type(default).__name__} (default {default!r}), got {value!r}")
    settings.rule_options = options
    return notes


# --- showing the result --------------------------------------------------------------------------

def describe(settings: Any) -> list[dict[str, Any]]:
    """Rows of (key, value, source) for ``initaudit config``."""
    rows = []
    for field, key in FIELD_KEYS.items():
        if not hasattr(settings, field):
            continue
        rows.append({"key": key, "value": getattr(settings, field),
                     "source": getattr(settings, "sources", {}).get(field, DEFAULT)})
    return rows

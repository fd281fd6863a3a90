"""Session-wide fixtures of the zoo: each model is built once, each (model, form) audited once."""

from __future__ import annotations

import warnings

import pytest

from zoo.forms import audit_form
from zoo.registry import ZOO

_BUILT: dict = {}
_REPORTS: dict = {}


def build(name: str):
    """(model, inputs) for a zoo entry, built once per session; skips when its library is missing."""
    z = ZOO[name]
    why = z.available()
    if why:
        pytest.skip(why)
    if name not in _BUILT:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _BUILT[name] = (z.build(), z.inputs())
    return _BUILT[name]


@pytest.fixture(scope="session")
def zoo_report(tmp_path_factory):
    def get(name: str, form: str):
        key = (name, form)
        if key not in _REPORTS:
            model, inputs = build(name)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _REPORTS[key] = audit_form(form, model, inputs, tmp_path_factory.mktemp(f"{name}-{form}"))
        return _REPORTS[key]
    return get

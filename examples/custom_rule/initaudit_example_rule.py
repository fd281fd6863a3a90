"""An example initaudit plugin: one rule that flags biases large enough to drown the input."""

from __future__ import annotations

import math
from collections.abc import Iterator

from initaudit.graph import ParamRole
from initaudit.rule import Finding, Rule, Severity, fmt


class BiasDominates(Rule):
    """A bias so large that a unit's pre-activation hardly depends on its input.

    What it checks
    --------------
    For every layer with a weight W and a bias b, the root mean square of b against the spread
    that W gives the pre-activation for unit-variance inputs, sqrt(fan_in) * std(W). A ratio
    above ``max_ratio`` is reported. Zero biases (the usual init) never are.

    Why it matters
    --------------
    A unit computes z = w . x + b with Var(w . x) = fan_in * Var(W) * E[x^2]. When
    rms(b) >> sqrt(fan_in) * std(W), z ~ b for every input: a ReLU unit with b << 0 never fires
    (dead), one with b >> 0 is linear, a tanh or sigmoid unit sits in its flat region and passes
    no gradient (tanh'(3) = 0.01).

    Example
    -------
    ```python
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 10))
    torch.nn.init.kaiming_normal_(model[0].weight, nonlinearity="relu")
    torch.nn.init.constant_(model[0].bias, -10.0)
    ```

    Fix
    ---
    ```python
    torch.nn.init.zeros_(model[0].bias)
    ```

    Options
    -------
    max_ratio (float, default 3.0): largest tolerated rms(b) / (sqrt(fan_in) * std(W)).
    """

    code = "XMP001"
    name = "bias-dominates"
    category = "mean-shift"
    severity = Severity.WARNING
    options = {"max_ratio": 3.0}
    applies_when_trained = False

    def check(self, ctx) -> Iterator[Finding]:
        params = ctx.graph.params
        for w in ctx.graph.weights():
            bias = params.get(w.name[: -len("weight")] + "bias") if w.name.endswith("weight") else None
            if bias is None or bias.role is not ParamRole.BIAS or not w.fan_in:
                continue
            ws, bs = ctx.analysis(w.name).stats, ctx.analysis(bias.name).stats
            if ws.nonfinite or bs.nonfinite or ws.std == 0:
                continue
            rms = math.sqrt(bs.mean ** 2 + bs.std ** 2)
            spread = math.sqrt(w.fan_in) * ws.std
            ratio = rms / spread
            if ratio > self.opts["max_ratio"]:
                yield self.finding(
                    bias.name, f"bias rms {fmt(rms)} is {fmt(ratio)}x the spread {fmt(spread)} the weights "
                               f"give the pre-activation (fan_in={w.fan_in}): the input hardly matters",
                    evidence={"bias_rms": rms, "weight_spread": spread, "ratio": ratio},
                    fix="torch.nn.init.zeros_(layer.bias)")


RULES = [BiasDominates]

"""The classic initialisation experiment: a 5-layer, 100-unit MLP under four inits and three
activations (Glorot & Bengio 2010; He et al. 2015; the cs231n demonstration).

Every combination is a zero-argument factory, so initaudit can audit it directly:

    initaudit examples/classic_mlp.py:tanh_small      # N(0, 0.01^2) before tanh
    initaudit examples/classic_mlp.py:relu_he         # He before ReLU: healthy

``python examples/classic_table.py`` audits all twelve and prints the README table.
"""

from __future__ import annotations

import torch
import torch.nn as nn

DEPTH, WIDTH = 5, 100
ACTIVATIONS = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "relu": nn.ReLU}
INITS = {
    "normal": "N(0, 1)",
    "small": "N(0, 0.01^2)",
    "xavier": "Xavier (gain 1)",
    "he": "He (kaiming_normal_, relu)",
}


def build(activation: str, init: str, seed: int = 0) -> nn.Sequential:
    """5 Linear(100, 100) layers with ``activation`` after each but the last; zero biases."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i in range(DEPTH):
        linear = nn.Linear(WIDTH, WIDTH)
        if init == "normal":
            nn.init.normal_(linear.weight, std=1.0)
        elif init == "small":
            nn.init.normal_(linear.weight, std=0.01)
        elif init == "xavier":
            nn.init.xavier_normal_(linear.weight)
        elif init == "he":
            nn.init.kaiming_normal_(linear.weight, nonlinearity="relu")
        nn.init.zeros_(linear.bias)
        layers.append(linear)
        if i < DEPTH - 1:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


def example_inputs() -> torch.Tensor:
    """Unit-variance inputs, as in the classic experiment."""
    return torch.randn(256, WIDTH, generator=torch.Generator().manual_seed(0))


def _factory(activation: str, init: str):
    def factory() -> nn.Sequential:
        return build(activation, init)

    factory.__name__ = f"{activation}_{init}"
    factory.__doc__ = f"{INITS[init]} weights before {activation}"
    return factory


for _act in ACTIVATIONS:
    for _init in INITS:
        globals()[f"{_act}_{_init}"] = _factory(_act, _init)

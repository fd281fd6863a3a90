"""A factory with several real defects, used by the loader and CLI tests."""

import torch
import torch.nn as nn


def build() -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                          nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    with torch.no_grad():
        nn.init.kaiming_normal_(model[0].weight, nonlinearity="relu")
        nn.init.zeros_(model[2].weight)  # constant: a dead hidden layer
        nn.init.normal_(model[4].weight, std=0.01)  # scale: far below Xavier before tanh
        nn.init.kaiming_normal_(model[6].weight, nonlinearity="relu")
        model[6].weight[32:] = model[6].weight[:32]  # symmetry: half the units are copies
        model[8].weight[0, 0] = float("nan")  # nonfinite
    return model


def healthy() -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 10))
    nn.init.kaiming_normal_(model[0].weight, nonlinearity="relu")
    return model


def not_a_module():
    return 42

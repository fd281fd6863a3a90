"""Small, seeded model factories for the configuration, CI-output and plugin tests.

Used as factory targets (``tests/data/ci_models.py:warn``) and imported directly.
"""

import torch
import torch.nn as nn


def healthy() -> nn.Module:
    """He-initialised ReLU MLP with zero biases: no findings at all."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    for layer in (model[0], model[2], model[4]):
        nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
        nn.init.zeros_(layer.bias)
    return model


def warn() -> nn.Module:
    """tanh MLP whose two hidden layers are N(0, 0.01^2): IA104 warnings only."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(100, 100), nn.Tanh(), nn.Linear(100, 100), nn.Tanh(), nn.Linear(100, 10))
    for layer in (model[0], model[2]):
        nn.init.normal_(layer.weight, std=0.01)
    return model


def broken() -> nn.Module:
    """ReLU MLP with an all-zero hidden layer (IA102 error) and a too-small first layer (IA104);
    the depth rules leave the zero layer to IA102 and do not judge the head after it."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    nn.init.normal_(model[0].weight, std=0.01)
    nn.init.zeros_(model[0].bias)
    nn.init.zeros_(model[2].weight)
    nn.init.kaiming_normal_(model[4].weight, nonlinearity="relu")
    return model


def warn_reseeded() -> nn.Module:
    """``warn`` drawn with another seed and std: the same defects with different numbers (0.009,
    so that IA109, which takes the head input's own shrink out, stays as far past its line)."""
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(100, 100), nn.Tanh(), nn.Linear(100, 100), nn.Tanh(), nn.Linear(100, 10))
    for layer in (model[0], model[2]):
        nn.init.normal_(layer.weight, std=0.009)
    return model


def warn_plus_new_defect() -> nn.Module:
    """``warn`` plus an all-zero hidden layer: one new error (IA102 at 2.weight replaces IA104;
    IA109 goes too, as the depth rules leave a zero layer to IA102 and do not judge the head)."""
    model = warn()
    nn.init.zeros_(model[2].weight)
    return model

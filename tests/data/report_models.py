"""Models for the report layout tests (tests/test_report_layout.py)."""

import torch
import torch.nn as nn


def deep_tanh(depth: int = 300, width: int = 32) -> nn.Sequential:
    """``depth`` Linear layers at N(0, 0.01^2) before tanh: one defect repeated at every layer,
    the case that printed thousands of lines before findings were grouped."""
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for _ in range(depth):
        lin = nn.Linear(width, width)
        nn.init.normal_(lin.weight, std=0.01)
        nn.init.zeros_(lin.bias)
        layers += [lin, nn.Tanh()]
    return nn.Sequential(*layers)


class Block(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.attention_output_projection = nn.Linear(d, d)
        self.feed_forward_expansion = nn.Linear(d, 4 * d)
        self.feed_forward_contraction = nn.Linear(4 * d, d)

    def forward(self, x):
        x = torch.tanh(self.attention_output_projection(x))
        return self.feed_forward_contraction(torch.relu(self.feed_forward_expansion(x)))


def long_names() -> nn.Module:
    """Parameter names of 40-odd characters and several defects (scale, zeros): a table and
    findings that must stay readable at 80 columns."""
    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module("encoder_blocks", nn.Sequential(*(Block(16) for _ in range(3))))
    model.add_module("classification_head", nn.Linear(16, 5))
    with torch.no_grad():
        for block in model.encoder_blocks:
            nn.init.normal_(block.attention_output_projection.weight, std=0.01)
        nn.init.zeros_(model.encoder_blocks[1].feed_forward_expansion.weight)
    return model

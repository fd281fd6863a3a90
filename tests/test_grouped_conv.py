"""A depthwise convolution's scheme judgement: an input channel feeds only its group's
out / groups channels, so Xavier's fan_out for a depthwise conv with no activation after it is
k, not C*k (torch's shape rule), and the spread it calls for is 1 / sqrt(k)."""

import torch
from torch import nn

import initaudit


class Block(nn.Module):
    """x + dwconv(x) (a conditional position encoding, as DaViT/Twins/RepViT write it), then a
    normalised ReLU MLP."""

    def __init__(self, c: int):
        super().__init__()
        self.cpe = nn.Conv2d(c, c, 3, padding=1, groups=c)
        self.norm = nn.BatchNorm2d(c)
        self.fc1, self.fc2 = nn.Conv2d(c, 4 * c, 1), nn.Conv2d(4 * c, c, 1)

    def forward(self, x):
        x = x + self.cpe(x)
        return x + self.fc2(torch.relu(self.fc1(self.norm(x))))


class Net(nn.Module):
    def __init__(self, c: int = 192, n: int = 6):
        super().__init__()
        self.stem = nn.Conv2d(3, c, 4, stride=4)
        self.blocks = nn.Sequential(*[Block(c) for _ in range(n)])
        self.head = nn.Linear(c, 10)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)).mean((2, 3)))


def _cpe_findings(model):
    report = initaudit.audit(model, inputs=torch.randn(4, 3, 32, 32))
    return [f for f in report.findings if f.rule == "IA104" and ".cpe." in f.layer]


def test_depthwise_conv_at_torch_default_is_no_warning():
    torch.manual_seed(0)
    model = Net()
    # measured: the depthwise branch does not grow the signal (x + cpe(x) over x)
    x = torch.randn(8, 192, 8, 8)
    with torch.no_grad():
        growth = (x + model.blocks[0].cpe(x)).std() / x.std()
    assert growth < 1.5
    found = _cpe_findings(model)
    assert found and all(f.severity.value == "info" for f in found)  # 0.58x, inside a residual branch
    assert all(abs(f.evidence["expected_std"] - 1 / 3) < 1e-6 for f in found)  # 1/sqrt(9), not sqrt(2/(9+9C))


def test_depthwise_conv_drawn_n01_still_warns():
    torch.manual_seed(0)
    model = Net()
    for b in model.blocks:
        nn.init.normal_(b.cpe.weight, std=1.0)
    x = torch.randn(8, 192, 8, 8)
    with torch.no_grad():
        growth = (x + model.blocks[0].cpe(x)).std() / x.std()
    assert growth > 2.5  # measured: each branch triples the signal
    found = _cpe_findings(model)
    assert len(found) == 6 and all(f.severity.value == "warning" for f in found)
    assert all("groups=192" in f.message for f in found)

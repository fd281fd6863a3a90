"""Held-out plain torch.nn programs for ``benchmarks/sweep/run.py``: models as tutorials, course
notebooks and reference implementations write them, each with the initialisation its source
uses (torch's layer defaults unless the source calls ``torch.nn.init``), none in the zoo.

    python benchmarks/sweep/run.py benchmarks/sweep/plain.py --out plain.jsonl

Every model is healthy as built (it trains with its source's recipe), so every finding at warning
or error severity is a false alarm unless a forward pass shows the defect.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


class MnistMLP(nn.Module):
    """The MNIST multilayer perceptron: 784-512-512-10, ReLU, dropout, torch's default init."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Dropout(0.2),
                                 nn.Linear(512, 512), nn.ReLU(), nn.Dropout(0.2), nn.Linear(512, 10))

    def forward(self, x):
        return self.net(x)


class MnistConvNet(nn.Module):
    """pytorch/examples mnist: two convs, max-pool, dropout, two linears, log-softmax."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 32, 3, 1), nn.Conv2d(32, 64, 3, 1)
        self.dropout1, self.dropout2 = nn.Dropout(0.25), nn.Dropout(0.5)
        self.fc1, self.fc2 = nn.Linear(9216, 128), nn.Linear(128, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2)
        x = F.relu(self.fc1(torch.flatten(self.dropout1(x), 1)))
        return F.log_softmax(self.fc2(self.dropout2(x)), dim=1)


class LeNet5(nn.Module):
    """LeNet-5 as LeCun et al. 1998 drew it: tanh, average pooling, 32x32 input."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 6, 5), nn.Tanh(), nn.AvgPool2d(2),
                                      nn.Conv2d(6, 16, 5), nn.Tanh(), nn.AvgPool2d(2),
                                      nn.Conv2d(16, 120, 5), nn.Tanh())
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(120, 84), nn.Tanh(), nn.Linear(84, 10))

    def forward(self, x):
        return self.classifier(self.features(x))


class Cifar10Tutorial(nn.Module):
    """The 60-minute-blitz CIFAR-10 net: conv-relu-pool twice, three linears."""

    def __init__(self):
        super().__init__()
        self.conv1, self.pool, self.conv2 = nn.Conv2d(3, 6, 5), nn.MaxPool2d(2, 2), nn.Conv2d(6, 16, 5)
        self.fc1, self.fc2, self.fc3 = nn.Linear(16 * 5 * 5, 120), nn.Linear(120, 84), nn.Linear(84, 10)

    def forward(self, x):
        x = self.pool(F.relu(self.conv2(self.pool(F.relu(self.conv1(x))))))
        x = torch.flatten(x, 1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


class VGG11NoBN(nn.Module):
    """A CIFAR VGG-11 without BatchNorm, kaiming_normal_(fan_out, relu) convs as torchvision's VGG."""

    def __init__(self):
        super().__init__()
        layers, c = [], 3
        for v in (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"):
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU(inplace=True)]
                c = v
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(512, 10)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class CifarResNet18(nn.Module):
    """kuangliu/pytorch-cifar's ResNet-18: 3x3 stem, four stages of BasicBlocks, default init."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64)
        blocks, c = [], 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            blocks += [BasicBlock(c, cout, stride), BasicBlock(cout, cout, 1)]
            c = cout
        self.layers = nn.Sequential(*blocks)
        self.linear = nn.Linear(512, 10)

    def forward(self, x):
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        return self.linear(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


class DepthwiseSeparableNet(nn.Module):
    """A MobileNetV1 written by hand: depthwise 3x3 + pointwise 1x1 blocks with BN and ReLU."""

    def __init__(self):
        super().__init__()
        def block(cin, cout, stride):
            return nn.Sequential(nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin),
                                 nn.ReLU(inplace=True), nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout),
                                 nn.ReLU(inplace=True))
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(inplace=True))
        self.blocks = nn.Sequential(block(32, 64, 1), block(64, 128, 2), block(128, 128, 1), block(128, 256, 2),
                                    block(256, 256, 1), block(256, 512, 2))
        self.fc = nn.Linear(512, 10)

    def forward(self, x):
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.blocks(self.stem(x)), 1), 1))


class SmallUNet(nn.Module):
    """A segmentation U-Net as course notebooks write it: double conv-BN-ReLU, max-pool down,
    ConvTranspose up, skip concatenation, a 1x1 head."""

    def __init__(self, cin: int = 3, classes: int = 2):
        super().__init__()
        def double(i, o):
            return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(inplace=True),
                                 nn.Conv2d(o, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(inplace=True))
        self.d1, self.d2, self.d3 = double(cin, 16), double(16, 32), double(32, 64)
        self.u2, self.c2 = nn.ConvTranspose2d(64, 32, 2, stride=2), double(64, 32)
        self.u1, self.c1 = nn.ConvTranspose2d(32, 16, 2, stride=2), double(32, 16)
        self.head = nn.Conv2d(16, classes, 1)

    def forward(self, x):
        a = self.d1(x)
        b = self.d2(F.max_pool2d(a, 2))
        c = self.d3(F.max_pool2d(b, 2))
        b = self.c2(torch.cat([self.u2(c), b], 1))
        return self.head(self.c1(torch.cat([self.u1(b), a], 1)))


class MnistVAE(nn.Module):
    """pytorch/examples vae: 784-400-(20, 20) encoder, reparameterisation, 20-400-784 sigmoid decoder
    (eval mode: the mean is decoded)."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc21, self.fc22 = nn.Linear(784, 400), nn.Linear(400, 20), nn.Linear(400, 20)
        self.fc3, self.fc4 = nn.Linear(20, 400), nn.Linear(400, 784)

    def forward(self, x):
        h = F.relu(self.fc1(x.view(-1, 784)))
        mu, logvar = self.fc21(h), self.fc22(h)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
        return torch.sigmoid(self.fc4(F.relu(self.fc3(z)))), mu, logvar


def _dcgan_init(m: nn.Module) -> None:
    """The DCGAN tutorial's ``weights_init``: N(0, 0.02) convs, N(1, 0.02) BatchNorm gammas."""
    name = type(m).__name__
    if "Conv" in name:
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif "BatchNorm" in name:
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


class DCGANDiscriminator(nn.Module):
    """The DCGAN tutorial's discriminator on 64x64 images: strided convs, BN, LeakyReLU(0.2), sigmoid."""

    def __init__(self, nc: int = 3, ndf: int = 32):
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(nc, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 2), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 4), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 8), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False), nn.Sigmoid())
        self.apply(_dcgan_init)

    def forward(self, x):
        return self.main(x).view(-1)


class MLPGenerator(nn.Module):
    """A vanilla GAN generator: z (100) -> 256 -> 512 -> 1024 -> 784, LeakyReLU(0.2), tanh output."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(100, 256), nn.LeakyReLU(0.2), nn.Linear(256, 512), nn.LeakyReLU(0.2),
                                 nn.Linear(512, 1024), nn.LeakyReLU(0.2), nn.Linear(1024, 784), nn.Tanh())

    def forward(self, z):
        return self.net(z)


class DQN(nn.Module):
    """The Nature DQN: 4x84x84 frames, three convs, a 512 hidden layer, one Q-value per action."""

    def __init__(self, actions: int = 6):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(4, 32, 8, 4), nn.ReLU(), nn.Conv2d(32, 64, 4, 2), nn.ReLU(),
                                 nn.Conv2d(64, 64, 3, 1), nn.ReLU(), nn.Flatten(), nn.Linear(3136, 512), nn.ReLU(),
                                 nn.Linear(512, actions))

    def forward(self, x):
        return self.net(x / 255.0)


def _ppo_layer(layer: nn.Linear, gain: float = math.sqrt(2), bias: float = 0.0) -> nn.Linear:
    """CleanRL's ``layer_init``: orthogonal weights with a gain, constant bias."""
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.constant_(layer.bias, bias)
    return layer


class PPOActorCritic(nn.Module):
    """CleanRL's PPO agent for continuous control: tanh MLPs, orthogonal sqrt(2) hidden layers,
    a 0.01-gain actor head and a 1.0-gain critic head; returns the action mean and the value."""

    def __init__(self, obs: int = 17, actions: int = 6):
        super().__init__()
        self.critic = nn.Sequential(_ppo_layer(nn.Linear(obs, 64)), nn.Tanh(), _ppo_layer(nn.Linear(64, 64)),
                                    nn.Tanh(), _ppo_layer(nn.Linear(64, 1), 1.0))
        self.actor_mean = nn.Sequential(_ppo_layer(nn.Linear(obs, 64)), nn.Tanh(), _ppo_layer(nn.Linear(64, 64)),
                                        nn.Tanh(), _ppo_layer(nn.Linear(64, actions), 0.01))
        self.actor_logstd = nn.Parameter(torch.zeros(1, actions))

    def forward(self, x):
        mean = self.actor_mean(x)
        return mean, self.actor_logstd.expand_as(mean).exp(), self.critic(x)


class TextCNN(nn.Module):
    """Kim (2014)'s sentence classifier: embedding, parallel conv1d of widths 3/4/5, max over time,
    dropout, a linear head."""

    def __init__(self, vocab: int = 2000, dim: int = 64, filters: int = 50, classes: int = 2):
        super().__init__()
        self.embedding = nn.Embedding(vocab, dim)
        self.convs = nn.ModuleList(nn.Conv1d(dim, filters, k) for k in (3, 4, 5))
        self.dropout, self.fc = nn.Dropout(0.5), nn.Linear(3 * filters, classes)

    def forward(self, tokens):
        x = self.embedding(tokens).transpose(1, 2)
        pooled = [F.relu(conv(x)).amax(dim=2) for conv in self.convs]
        return self.fc(self.dropout(torch.cat(pooled, 1)))


class WordLSTM(nn.Module):
    """pytorch/examples word_language_model RNNModel (LSTM): uniform(-0.1, 0.1) encoder and decoder,
    zero decoder bias, two layers, tied weights, dropout."""

    def __init__(self, ntoken: int = 2000, ninp: int = 128, nlayers: int = 2):
        super().__init__()
        self.drop = nn.Dropout(0.2)
        self.encoder = nn.Embedding(ntoken, ninp)
        self.rnn = nn.LSTM(ninp, ninp, nlayers, dropout=0.2)
        self.decoder = nn.Linear(ninp, ntoken)
        self.decoder.weight = self.encoder.weight
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)

    def forward(self, tokens):  # (seq, batch), as the example feeds it
        out, _ = self.rnn(self.drop(self.encoder(tokens)))
        return F.log_softmax(self.decoder(self.drop(out)), dim=-1)


class PositionalEncoding(nn.Module):
    """The sinusoidal table of the word_language_model example, a buffer."""

    def __init__(self, d_model: int, max_len: int = 512):
        super().__init__()
        position = torch.arange(max_len).unsqueeze(1)
        div = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
        pe = torch.zeros(max_len, 1, d_model)
        pe[:, 0, 0::2], pe[:, 0, 1::2] = torch.sin(position * div), torch.cos(position * div)
        self.register_buffer("pe", pe)
        self.dropout = nn.Dropout(0.1)

    def forward(self, x):
        return self.dropout(x + self.pe[:x.size(0)])


class TransformerLM(nn.Module):
    """pytorch/examples word_language_model TransformerModel: uniform(-0.1, 0.1) embedding and
    decoder, sqrt(d) embedding scale, sinusoidal positions, nn.TransformerEncoder (sequence first)."""

    def __init__(self, ntoken: int = 2000, d: int = 128, heads: int = 4, layers: int = 4):
        super().__init__()
        self.d = d
        self.encoder = nn.Embedding(ntoken, d)
        self.pos = PositionalEncoding(d)
        self.transformer = nn.TransformerEncoder(nn.TransformerEncoderLayer(d, heads, 4 * d, 0.1), layers,
                                                 enable_nested_tensor=False)
        self.decoder = nn.Linear(d, ntoken)
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)
        nn.init.uniform_(self.decoder.weight, -0.1, 0.1)

    def forward(self, tokens):  # (seq, batch)
        mask = nn.Transformer.generate_square_subsequent_mask(tokens.size(0))
        x = self.pos(self.encoder(tokens) * math.sqrt(self.d))
        return F.log_softmax(self.decoder(self.transformer(x, mask=mask, is_causal=True)), dim=-1)


class CharGRU(nn.Module):
    """A char-RNN: embedding, 2-layer GRU (batch first), a linear decoder over the characters."""

    def __init__(self, chars: int = 96, hidden: int = 256):
        super().__init__()
        self.embed = nn.Embedding(chars, hidden)
        self.gru = nn.GRU(hidden, hidden, 2, batch_first=True, dropout=0.1)
        self.out = nn.Linear(hidden, chars)

    def forward(self, tokens):
        h, _ = self.gru(self.embed(tokens))
        return self.out(h)


class BiLSTMTagger(nn.Module):
    """A part-of-speech tagger: embedding, one bidirectional LSTM layer, a per-token linear, log-softmax."""

    def __init__(self, vocab: int = 3000, emb: int = 100, hidden: int = 128, tags: int = 17):
        super().__init__()
        self.emb = nn.Embedding(vocab, emb, padding_idx=0)
        self.lstm = nn.LSTM(emb, hidden, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(2 * hidden, tags)

    def forward(self, tokens):
        out, _ = self.lstm(self.emb(tokens))
        return F.log_softmax(self.fc(out), dim=-1)


class PointNet(nn.Module):
    """PointNet's classifier without the T-nets: a shared MLP as 1x1 Conv1d with BN, max over the
    points, an MLP head with dropout; points arrive as (batch, 3, n)."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.feat = nn.Sequential(nn.Conv1d(3, 64, 1), nn.BatchNorm1d(64), nn.ReLU(), nn.Conv1d(64, 128, 1),
                                  nn.BatchNorm1d(128), nn.ReLU(), nn.Conv1d(128, 512, 1), nn.BatchNorm1d(512))
        self.head = nn.Sequential(nn.Linear(512, 256), nn.BatchNorm1d(256), nn.ReLU(), nn.Dropout(0.3),
                                  nn.Linear(256, classes))

    def forward(self, x):
        return self.head(self.feat(x).amax(dim=2))


class TimeSeriesCNN(nn.Module):
    """A 1D CNN for sensor windows (batch, channels, time): conv-BN-ReLU x3, global average pool."""

    def __init__(self, channels: int = 9, classes: int = 6):
        super().__init__()
        self.net = nn.Sequential(nn.Conv1d(channels, 64, 7, padding=3), nn.BatchNorm1d(64), nn.ReLU(),
                                 nn.Conv1d(64, 128, 5, padding=2), nn.BatchNorm1d(128), nn.ReLU(),
                                 nn.Conv1d(128, 64, 3, padding=1), nn.BatchNorm1d(64), nn.ReLU(),
                                 nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(64, classes))

    def forward(self, x):
        return self.net(x)


class DenoisingAutoencoder(nn.Module):
    """A fully connected autoencoder: 784-256-64 with ReLU, back to 784 through a sigmoid."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 64), nn.ReLU())
        self.decoder = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 784), nn.Sigmoid())

    def forward(self, x):
        return self.decoder(self.encoder(x))


class XavierTanhMLP(nn.Module):
    """A tabular regressor as a course writes it: six tanh layers with Xavier-normal weights and zero
    biases (Glorot & Bengio's recipe for tanh)."""

    def __init__(self, features: int = 20):
        super().__init__()
        layers, d = [], features
        for _ in range(6):
            layers += [nn.Linear(d, 128), nn.Tanh()]
            d = 128
        self.net = nn.Sequential(*layers, nn.Linear(128, 1))
        for m in self.net:
            if isinstance(m, nn.Linear):
                nn.init.xavier_normal_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.net(x)


class KaimingDeepMLP(nn.Module):
    """A 12-layer ReLU MLP with BatchNorm1d, kaiming_normal_ weights: a deep tabular baseline."""

    def __init__(self, features: int = 32, width: int = 256, depth: int = 12):
        super().__init__()
        layers, d = [], features
        for _ in range(depth):
            layers += [nn.Linear(d, width), nn.BatchNorm1d(width), nn.ReLU()]
            d = width
        self.net = nn.Sequential(*layers, nn.Linear(width, 3))
        for m in self.net:
            if isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.net(x)


class SelfNormalizingMLP(nn.Module):
    """Klambauer et al. (2017)'s SNN: SELU units, LeCun-normal weights, alpha dropout."""

    def __init__(self, features: int = 64, width: int = 256, depth: int = 8):
        super().__init__()
        layers, d = [], features
        for _ in range(depth):
            linear = nn.Linear(d, width)
            nn.init.kaiming_normal_(linear.weight, nonlinearity="linear")  # LeCun normal: N(0, 1/fan_in)
            nn.init.zeros_(linear.bias)
            layers += [linear, nn.SELU(), nn.AlphaDropout(0.05)]
            d = width
        self.net = nn.Sequential(*layers, nn.Linear(width, 5))

    def forward(self, x):
        return self.net(x)


class Seq2SeqTransformer(nn.Module):
    """The translation tutorial's model around ``nn.Transformer`` (batch first), Xavier-uniform on
    every matrix as the tutorial does; the forward takes source and target tokens."""

    def __init__(self, src_vocab: int = 1000, tgt_vocab: int = 1000, d: int = 128):
        super().__init__()
        self.src_emb, self.tgt_emb = nn.Embedding(src_vocab, d), nn.Embedding(tgt_vocab, d)
        self.transformer = nn.Transformer(d, 4, 2, 2, 256, 0.1, batch_first=True)
        self.generator = nn.Linear(d, tgt_vocab)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, src, tgt):
        mask = nn.Transformer.generate_square_subsequent_mask(tgt.size(1))
        out = self.transformer(self.src_emb(src), self.tgt_emb(tgt), tgt_mask=mask)
        return self.generator(out)


class SiameseEmbedding(nn.Module):
    """A siamese / triplet embedding net: conv-PReLU-pool twice, two linears, L2-normalised output."""

    def __init__(self, dim: int = 64):
        super().__init__()
        self.convnet = nn.Sequential(nn.Conv2d(1, 32, 5), nn.PReLU(), nn.MaxPool2d(2, 2),
                                     nn.Conv2d(32, 64, 5), nn.PReLU(), nn.MaxPool2d(2, 2))
        self.fc = nn.Sequential(nn.Linear(64 * 4 * 4, 256), nn.PReLU(), nn.Linear(256, 256), nn.PReLU(),
                                nn.Linear(256, dim))

    def forward(self, x):
        return F.normalize(self.fc(torch.flatten(self.convnet(x), 1)), dim=1)


class AttentionMIL(nn.Module):
    """Ilse et al. (2018)'s attention-based multiple-instance pooling over a bag of feature vectors
    (batch, instances, features): a gated tanh x sigmoid attention, a weighted sum, a classifier."""

    def __init__(self, features: int = 512, hidden: int = 128):
        super().__init__()
        self.embed = nn.Sequential(nn.Linear(features, hidden), nn.ReLU())
        self.att_v, self.att_u = nn.Linear(hidden, 64), nn.Linear(hidden, 64)
        self.att_w = nn.Linear(64, 1)
        self.classifier = nn.Linear(hidden, 1)

    def forward(self, bag):
        h = self.embed(bag)
        a = self.att_w(torch.tanh(self.att_v(h)) * torch.sigmoid(self.att_u(h)))
        a = torch.softmax(a, dim=1)
        return torch.sigmoid(self.classifier((a * h).sum(dim=1)))


def _plain(cls: type) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        torch.manual_seed(0)
        return cls().eval()
    return build


MODELS: dict[str, Callable[[], nn.Module]] = {
    "mnist_mlp": _plain(MnistMLP),
    "mnist_convnet": _plain(MnistConvNet),
    "lenet5": _plain(LeNet5),
    "cifar10_tutorial": _plain(Cifar10Tutorial),
    "vgg11_nobn": _plain(VGG11NoBN),
    "cifar_resnet18": _plain(CifarResNet18),
    "depthwise_separable": _plain(DepthwiseSeparableNet),
    "small_unet": _plain(SmallUNet),
    "mnist_vae": _plain(MnistVAE),
    "dcgan_discriminator": _plain(DCGANDiscriminator),
    "mlp_generator": _plain(MLPGenerator),
    "dqn": _plain(DQN),
    "ppo_actor_critic": _plain(PPOActorCritic),
    "text_cnn": _plain(TextCNN),
    "word_lstm": _plain(WordLSTM),
    "transformer_lm": _plain(TransformerLM),
    "char_gru": _plain(CharGRU),
    "bilstm_tagger": _plain(BiLSTMTagger),
    "pointnet": _plain(PointNet),
    "timeseries_cnn": _plain(TimeSeriesCNN),
    "denoising_autoencoder": _plain(DenoisingAutoencoder),
    "xavier_tanh_mlp": _plain(XavierTanhMLP),
    "kaiming_deep_mlp": _plain(KaimingDeepMLP),
    "selu_mlp": _plain(SelfNormalizingMLP),
    "seq2seq_transformer": _plain(Seq2SeqTransformer),
    "siamese_embedding": _plain(SiameseEmbedding),
    "attention_mil": _plain(AttentionMIL),
}

"""ONNX files the ONNX tests build: with ``onnx.helper`` (exact control over the ops) and with
``torch.onnx.export`` (what users actually get). Every builder seeds its own generator, writes
into the folder it is given, and returns the path; nothing is downloaded.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn as nn
from onnx import TensorProto, helper, numpy_helper

OPSET = 18


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def init(name: str, arr: np.ndarray) -> TensorProto:
    return numpy_helper.from_array(np.ascontiguousarray(arr), name)


def save(path: Path, nodes: Sequence[onnx.NodeProto], inputs: Sequence[onnx.ValueInfoProto],
         outputs: Sequence[onnx.ValueInfoProto], initializers: Sequence[TensorProto], *,
         opset: int = OPSET, check: bool = True, external: bool = False) -> Path:
    graph = helper.make_graph(list(nodes), "g", list(inputs), list(outputs), list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 9
    if check:
        onnx.checker.check_model(model)
    if external:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=Path(path).name + ".data", size_threshold=0)
    else:
        onnx.save_model(model, str(path))
    return Path(path)


def tensor_in(name: str, shape: Sequence, elem: int = TensorProto.FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, list(shape))


def mlp_onnx(path: Path, *, depth: int = 5, width: int = 64, d_in: int | None = None,
             d_out: int | None = None, act: str = "Relu", std: float | str = "he", seed: int = 0,
             op: str = "Gemm", trans_b: int = 1, bias: float = 0.0, act_attrs: dict | None = None,
             external: bool = False, weights: dict[int, np.ndarray] | None = None) -> Path:
    """``depth`` dense layers (Gemm or MatMul+Add), ``act`` between them, initializers named
    ``fc{i}.weight`` / ``fc{i}.bias``. ``std``: a number, "he" or "xavier"; ``weights`` replaces
    single layers' (out, in) matrices."""
    r = rng(seed)
    d_in = d_in or width
    nodes, inits = [], []
    x = "x"
    for i in range(depth):
        fi = d_in if i == 0 else width
        fo = (d_out or width) if i == depth - 1 else width
        if std == "he":
            s = math.sqrt(2.0 / fi)
        elif std == "xavier":
            s = math.sqrt(2.0 / (fi + fo))
        else:
            s = float(std)
        w = (r.standard_normal((fo, fi)) * s).astype(np.float32)  # torch layout (out, in)
        if weights and i in weights:
            w = weights[i].astype(np.float32)
        b = np.full((fo,), bias, np.float32)
        out = f"h{i}"
        if op == "Gemm":
            stored = w if trans_b else np.ascontiguousarray(w.T)
            inits += [init(f"fc{i}.weight", stored), init(f"fc{i}.bias", b)]
            nodes.append(helper.make_node("Gemm", [x, f"fc{i}.weight", f"fc{i}.bias"], [out],
                                          name=f"fc{i}", transB=trans_b))
        else:  # MatMul with an (in, out) weight, then Add(bias)
            inits += [init(f"fc{i}.weight", np.ascontiguousarray(w.T)), init(f"fc{i}.bias", b)]
            nodes.append(helper.make_node("MatMul", [x, f"fc{i}.weight"], [f"mm{i}"], name=f"fc{i}"))
            nodes.append(helper.make_node("Add", [f"mm{i}", f"fc{i}.bias"], [out], name=f"fc{i}.add"))
        x = out
        if i < depth - 1 and act:
            nodes.append(helper.make_node(act, [x], [f"a{i}"], name=f"act{i}", **(act_attrs or {})))
            x = f"a{i}"
    nodes.append(helper.make_node("Identity", [x], ["y"], name="out"))
    return save(path, nodes, [tensor_in("x", ["batch", d_in])], [tensor_in("y", ["batch", d_out or width])],
                inits, external=external)


def torch_mlp(depth: int = 5, width: int = 64, act: type[nn.Module] = nn.ReLU, std: float | str = "he",
              seed: int = 0, d_in: int | None = None, d_out: int | None = None) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    d_in = d_in or width
    for i in range(depth):
        lin = nn.Linear(d_in if i == 0 else width, (d_out or width) if i == depth - 1 else width)
        if std == "he":
            nn.init.kaiming_normal_(lin.weight, nonlinearity="relu")
        elif std == "xavier_tanh":
            nn.init.xavier_normal_(lin.weight, gain=nn.init.calculate_gain("tanh"))
        elif std != "default":
            nn.init.normal_(lin.weight, std=float(std))
        if std != "default":
            nn.init.zeros_(lin.bias)
        layers.append(lin)
        if i < depth - 1:
            layers.append(act())
    return nn.Sequential(*layers)


def export(module: nn.Module, args: tuple, path: Path, *, dynamo: bool = False, opset: int | None = None,
           input_names: list[str] | None = None, dynamic_batch: bool = True, **kw) -> Path:
    """torch.onnx.export, quietly. The classic exporter (dynamo=False) is the predictable one."""
    module.eval()
    names = input_names or [f"input{i}" for i in range(len(args))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            torch.onnx.export(module, args, str(path), dynamo=True, input_names=names,
                              opset_version=opset, verbose=False, **kw)
        else:
            axes = kw.pop("dynamic_axes", None) or ({n: {0: "batch"} for n in names} if dynamic_batch else None)
            torch.onnx.export(module, args, str(path), dynamo=False, input_names=names,
                              opset_version=opset or 17, dynamic_axes=axes, **kw)
    return Path(path)


# ---- models for the healthy controls --------------------------------------------------------


class Block(nn.Module):
    """Pre-LayerNorm transformer block (GPT-2 layout, nn.Linear projections)."""

    def __init__(self, d: int, heads: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(d)
        self.q_proj, self.k_proj, self.v_proj = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.attn_proj = nn.Linear(d, d)
        self.ln_2 = nn.LayerNorm(d)
        self.fc = nn.Linear(d, 4 * d)
        self.act = nn.GELU()
        self.mlp_proj = nn.Linear(4 * d, d)
        self.heads = heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        h = self.ln_1(x)
        q, k, v = (p(h).view(b, t, self.heads, d // self.heads).transpose(1, 2)
                   for p in (self.q_proj, self.k_proj, self.v_proj))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(d // self.heads)
        y = (att.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, t, d)
        x = x + self.attn_proj(y)
        return x + self.mlp_proj(self.act(self.fc(self.ln_2(x))))


class TinyGPT(nn.Module):
    """GPT-2 style: token + position embeddings, pre-LN blocks, final LN, untied head; 0.02
    init with the residual projections scaled by 1/sqrt(2 * n_layer)."""

    def __init__(self, vocab: int = 96, d: int = 64, layers: int = 4, heads: int = 4, ctx: int = 32,
                 seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.wte = nn.Embedding(vocab, d)
        self.wpe = nn.Embedding(ctx, d)
        self.h = nn.ModuleList(Block(d, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                std = 0.02 / math.sqrt(2 * layers) if name.endswith(("attn_proj.weight", "mlp_proj.weight")) else 0.02
                nn.init.normal_(p, std=std)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(ids.shape[1], device=ids.device)
        x = self.wte(ids) + self.wpe(pos)
        for blk in self.h:
            x = blk(x)
        return self.lm_head(self.ln_f(x))


class BasicBlock(nn.Module):
    def __init__(self, c: int, zero_init: bool = False):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.relu = nn.ReLU()
        if zero_init:
            nn.init.zeros_(self.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(x + self.bn2(self.conv2(out)))


class TinyResNet(nn.Module):
    def __init__(self, c: int = 16, blocks: int = 2, classes: int = 10, seed: int = 0,
                 zero_init_residual: bool = False):
        super().__init__()
        torch.manual_seed(seed)
        self.stem = nn.Conv2d(3, c, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c)
        self.relu = nn.ReLU()
        self.layers = nn.Sequential(*(BasicBlock(c, zero_init_residual) for _ in range(blocks)))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.relu(self.bn(self.stem(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


def gpt2_sized_onnx(path: Path, *, layers: int = 12, d: int = 768, vocab: int = 50257, ctx: int = 1024,
                    seed: int = 0) -> Path:
    """A GPT-2-small-sized graph (about 124M parameters, ~500 MB of fp32) assembled with
    onnx.helper and saved with external data: what the static-pass benchmark reads.

    Initializers are written straight to the data file one at a time, so building it never
    holds more than one tensor in memory."""
    path = Path(path)
    data_name = path.name + ".data"
    r = rng(seed)
    nodes: list[onnx.NodeProto] = []
    inits: list[TensorProto] = []
    offset = 0
    with open(path.parent / data_name, "wb") as f:
        def add(name: str, arr: np.ndarray) -> str:
            nonlocal offset
            arr = np.ascontiguousarray(arr, dtype=np.float32)
            t = TensorProto()
            t.name, t.data_type = name, TensorProto.FLOAT
            t.dims.extend(arr.shape)
            t.data_location = TensorProto.EXTERNAL
            for k, v in (("location", data_name), ("offset", str(offset)), ("length", str(arr.nbytes))):
                e = t.external_data.add()
                e.key, e.value = k, v
            f.write(arr.tobytes())
            offset += arr.nbytes
            inits.append(t)
            return name

        def normal(shape, std):
            return (r.standard_normal(shape, dtype=np.float32) * np.float32(std))

        def small(name, arr):
            inits.append(numpy_helper.from_array(np.asarray(arr), name))
            return name

        resid_std = 0.02 / math.sqrt(2 * layers)
        add("wte.weight", normal((vocab, d), 0.02))
        add("wpe.weight", normal((ctx, d), 0.01))
        small("heads_shape", np.array([0, 0, 12, d // 12], np.int64))
        small("merge_shape", np.array([0, 0, d], np.int64))
        small("scale", np.array(1 / math.sqrt(d // 12), np.float32))
        nodes += [helper.make_node("Gather", ["wte.weight", "ids"], ["tok"], name="wte"),
                  helper.make_node("Gather", ["wpe.weight", "pos"], ["posemb"], name="wpe"),
                  helper.make_node("Add", ["tok", "posemb"], ["x0"], name="embed_add")]
        x = "x0"
        for i in range(layers):
            p = f"h.{i}."
            add(p + "ln_1.weight", np.ones(d))
            add(p + "ln_1.bias", np.zeros(d))
            add(p + "attn.c_attn.weight", normal((d, 3 * d), 0.02))
            add(p + "attn.c_attn.bias", np.zeros(3 * d))
            add(p + "attn.c_proj.weight", normal((d, d), resid_std))
            add(p + "attn.c_proj.bias", np.zeros(d))
            add(p + "ln_2.weight", np.ones(d))
            add(p + "ln_2.bias", np.zeros(d))
            add(p + "mlp.c_fc.weight", normal((d, 4 * d), 0.02))
            add(p + "mlp.c_fc.bias", np.zeros(4 * d))
            add(p + "mlp.c_proj.weight", normal((4 * d, d), resid_std))
            add(p + "mlp.c_proj.bias", np.zeros(d))
            t = lambda s, p=p: f"{p}{s}"  # noqa: E731
            nodes += [
                helper.make_node("LayerNormalization", [x, p + "ln_1.weight", p + "ln_1.bias"], [t("ln1")],
                                 name=p + "ln_1", axis=-1),
                helper.make_node("MatMul", [t("ln1"), p + "attn.c_attn.weight"], [t("qkv0")], name=p + "attn.c_attn"),
                helper.make_node("Add", [t("qkv0"), p + "attn.c_attn.bias"], [t("qkv")], name=p + "attn.c_attn.add"),
                helper.make_node("Split", [t("qkv")], [t("q0"), t("k0"), t("v0")], name=p + "attn.split",
                                 axis=-1, num_outputs=3),
            ]
            for nm in ("q", "k", "v"):
                nodes += [helper.make_node("Reshape", [t(nm + "0"), "heads_shape"], [t(nm + "1")],
                                           name=p + nm + "_reshape"),
                          helper.make_node("Transpose", [t(nm + "1")], [t(nm)], name=p + nm + "_t",
                                           perm=[0, 2, 3, 1] if nm == "k" else [0, 2, 1, 3])]
            nodes += [
                helper.make_node("MatMul", [t("q"), t("k")], [t("att0")], name=p + "attn.qk"),
                helper.make_node("Mul", [t("att0"), "scale"], [t("att1")], name=p + "attn.scale"),
                helper.make_node("Softmax", [t("att1")], [t("att")], name=p + "attn.softmax", axis=-1),
                helper.make_node("MatMul", [t("att"), t("v")], [t("y0")], name=p + "attn.av"),
                helper.make_node("Transpose", [t("y0")], [t("y1")], name=p + "attn.merge_t", perm=[0, 2, 1, 3]),
                helper.make_node("Reshape", [t("y1"), "merge_shape"], [t("y")], name=p + "attn.merge"),
                helper.make_node("MatMul", [t("y"), p + "attn.c_proj.weight"], [t("ap0")], name=p + "attn.c_proj"),
                helper.make_node("Add", [t("ap0"), p + "attn.c_proj.bias"], [t("ap")], name=p + "attn.c_proj.add"),
                helper.make_node("Add", [x, t("ap")], [t("r1")], name=p + "resid1"),
                helper.make_node("LayerNormalization", [t("r1"), p + "ln_2.weight", p + "ln_2.bias"], [t("ln2")],
                                 name=p + "ln_2", axis=-1),
                helper.make_node("MatMul", [t("ln2"), p + "mlp.c_fc.weight"], [t("fc0")], name=p + "mlp.c_fc"),
                helper.make_node("Add", [t("fc0"), p + "mlp.c_fc.bias"], [t("fc")], name=p + "mlp.c_fc.add"),
                helper.make_node("Gelu", [t("fc")], [t("g")], name=p + "mlp.act", approximate="tanh"),
                helper.make_node("MatMul", [t("g"), p + "mlp.c_proj.weight"], [t("mp0")], name=p + "mlp.c_proj"),
                helper.make_node("Add", [t("mp0"), p + "mlp.c_proj.bias"], [t("mp")], name=p + "mlp.c_proj.add"),
                helper.make_node("Add", [t("r1"), t("mp")], [t("out")], name=p + "resid2"),
            ]
            x = t("out")
        add("ln_f.weight", np.ones(d))
        add("ln_f.bias", np.zeros(d))
        nodes += [helper.make_node("LayerNormalization", [x, "ln_f.weight", "ln_f.bias"], ["xf"], name="ln_f", axis=-1),
                  helper.make_node("Transpose", ["wte.weight"], ["wte_t"], name="lm_head.t"),  # tied head
                  helper.make_node("MatMul", ["xf", "wte_t"], ["logits"], name="lm_head")]
    graph = helper.make_graph(nodes, "gpt2", [tensor_in("ids", ["batch", "seq"], TensorProto.INT64),
                                             tensor_in("pos", ["batch", "seq"], TensorProto.INT64)],
                              [tensor_in("logits", ["batch", "seq", vocab])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 9
    with open(path, "wb") as f:
        f.write(model.SerializeToString())
    return path

"""The onnxruntime probe: intermediate outputs exposed and summarised with the shared
``site_stats``, synthetic inputs from the graph's types and shapes, memory-bounded passes."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper

from initaudit.errors import ConfigError, ProbeRequestError
from initaudit.loaders.onnx_loader import load_onnx
from initaudit.probe import stats as shared_stats
from initaudit.probe.onnx_probe import run_onnx_probe, session_options
from initaudit.probe.options import parse_input_shapes
from onnx_models import TinyGPT, TinyResNet, export, init, mlp_onnx, rng, save, tensor_in


def _probe(path, **kw):
    return run_onnx_probe(load_onnx(path), path, **kw)


def _numpy_forward(path, x):
    """Reference pre-activations of an mlp_onnx Gemm/tanh model."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(path))
    w = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    outs, h = [], x
    i = 0
    while f"fc{i}.weight" in w:
        z = h @ w[f"fc{i}.weight"].T + w[f"fc{i}.bias"]
        outs.append(z)
        h = np.tanh(z)
        i += 1
    return outs


def test_sites_match_a_reference_forward(tmp_path):
    path = mlp_onnx(tmp_path / "t.onnx", depth=4, width=50, act="Tanh", std=0.5, seed=1)
    res = _probe(path, batch_size=32, seed=3)
    assert res.ran and res.grads is None and res.batch_size == 32 and res.inputs == "synthetic"
    layers = [s for s in res.sites if s.kind == "layer"]
    acts = [s for s in res.sites if s.kind == "act"]
    assert [s.param for s in layers] == [f"fc{i}.weight" for i in range(4)]
    assert [s.depth for s in layers] == [0, 1, 2, 3]
    assert acts == []  # as the torch probe: an activation right after a layer site is read there
    assert res.sites[0].kind == "input" and res.sites[-1].kind == "output"
    x = np.random.default_rng(3).standard_normal((32, 50), dtype=np.float32)
    ref = _numpy_forward(path, x)
    for site, z in zip(layers, ref):
        assert site.std == pytest.approx(float(z.std()), rel=1e-4)
        assert site.units == 50 and site.samples == 32
    assert layers[0].activation.name == "tanh" and layers[0].saturated_fraction is not None
    assert res.site_for_param("fc2.weight") is layers[2]


def test_same_statistics_code_as_the_torch_probe(tmp_path):
    path = mlp_onnx(tmp_path / "m.onnx", depth=3, width=20, seed=2)
    calls = []

    def spy(x, **kw):
        calls.append((tuple(x.shape), kw))
        return shared_stats.site_stats(x, **kw)

    res = _probe(path, batch_size=8, site_stats=spy)
    assert len(calls) == len(res.sites) > 0
    shape, kw = calls[1]  # calls[0]: the input
    assert shape == (8, 20) and kw["kind"] == "layer" and kw["param"] == "fc0.weight"
    assert kw["activation"].name == "relu" and kw["pre_activation"] is True and kw["unit_dim"] == -1
    assert kw["identical"] is True and kw["bias"].shape == (20,)
    default = _probe(path, batch_size=8)
    assert [s.std for s in default.sites] == [s.std for s in res.sites]


def test_same_sites_as_the_torch_probe(tmp_path):
    """The same model, probed as a module (hooks) and as its ONNX export (onnxruntime), on the
    same inputs: the same sites, with the same statistics."""
    from initaudit.loaders.torch_module import graph_from_module
    from initaudit.probe import ProbeOptions, run_probe

    from onnx_models import torch_mlp

    model = torch_mlp(depth=4, width=32, act=torch.nn.Tanh, std=0.3, d_in=12, d_out=3)
    x = torch.randn(16, 12, generator=torch.Generator().manual_seed(0))
    path = export(model, (x,), tmp_path / "m.onnx")
    t = run_probe(graph_from_module(model, "m"), ProbeOptions(inputs=x, backward=False))
    o = run_probe(load_onnx(path), ProbeOptions(inputs=x))
    assert t.ran and o.ran, (t.skipped_reason, o.skipped_reason)
    assert [(s.kind, s.units, s.samples, s.depth) for s in t.sites] == \
        [(s.kind, s.units, s.samples, s.depth) for s in o.sites]
    for a, b in zip(t.sites, o.sites):
        assert b.std == pytest.approx(a.std, rel=1e-4)
        assert b.saturated_fraction == a.saturated_fraction
        if a.kind == "layer":
            assert (a.param, str(a.activation)) == (b.param, str(b.activation))


def test_batchnorm_uses_batch_statistics_like_the_torch_probe(tmp_path):
    """A kept BatchNormalization normalises by the probe batch, as the torch probe's train-mode
    BatchNorm does (a fresh model's running statistics, 0 and 1, would normalise nothing)."""
    from initaudit.loaders.torch_module import graph_from_module
    from initaudit.probe import ProbeOptions, run_probe

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                                torch.nn.Conv2d(8, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                                torch.nn.Flatten(), torch.nn.Linear(8 * 4 * 4, 5))
    x = torch.randn(16, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 3 + 1
    path = export(model, (x,), tmp_path / "bn.onnx", do_constant_folding=False)
    import onnx

    assert sum(n.op_type == "BatchNormalization" for n in onnx.load(str(path)).graph.node) == 2
    t = run_probe(graph_from_module(model, "m"), ProbeOptions(inputs=x, backward=False))
    o = run_probe(load_onnx(path), ProbeOptions(inputs=x))
    assert o.ran, o.skipped_reason
    assert any("batch's statistics" in n for n in o.notes)
    norms_t = [s for s in t.sites if s.kind == "norm"]
    norms_o = [s for s in o.sites if s.kind == "norm"]
    assert len(norms_t) == len(norms_o) == 2
    for a, b in zip(norms_t, norms_o):
        assert b.std == pytest.approx(a.std, rel=1e-3) and b.units == a.units == 8
        assert b.dead_fraction == a.dead_fraction
    assert [(s.kind, s.units) for s in t.sites] == [(s.kind, s.units) for s in o.sites]
    assert o.sites[-1].std == pytest.approx(t.sites[-1].std, rel=1e-3)


def test_dead_relu_units(tmp_path):
    path = mlp_onnx(tmp_path / "dead.onnx", depth=3, width=32, bias=-50.0)
    res = _probe(path, batch_size=16)
    first = res.site_for_param("fc0.weight")
    assert first.dead_fraction == 1.0 and first.activation.name == "relu"


def test_tanh_saturation(tmp_path):
    path = mlp_onnx(tmp_path / "sat.onnx", depth=3, width=100, act="Tanh", std=1.0)
    res = _probe(path, batch_size=16)
    assert res.site_for_param("fc1.weight").saturated_fraction > 0.5


def test_identical_units(tmp_path):
    w = rng(1).standard_normal((32, 32)) * math.sqrt(2 / 32)
    w[16:] = w[:16]
    res = _probe(mlp_onnx(tmp_path / "dup.onnx", depth=3, width=32, weights={1: w}), batch_size=16)
    assert res.site_for_param("fc1.weight").identical_units == 16


def test_conv_channels_are_units(tmp_path):
    path = export(TinyResNet(), (torch.randn(2, 3, 16, 16),), tmp_path / "rn.onnx")
    res = _probe(path, batch_size=4)
    assert res.ran, res.skipped_reason
    convs = [s for s in res.sites if s.kind == "layer" and s.units == 16]
    assert len(convs) == 5 and all(s.samples == 4 * 16 * 16 for s in convs)
    assert res.input_shapes == [[4, 3, 16, 16]]


def test_embedding_ids_within_the_table(tmp_path):
    path = export(TinyGPT(vocab=50, ctx=32), (torch.randint(0, 50, (2, 16)),), tmp_path / "gpt.onnx",
                  input_names=["ids"], dynamic_axes={"ids": {0: "batch", 1: "seq"}})
    res = _probe(path, batch_size=4, input_shapes={"ids": (4, 16)})
    assert res.ran, res.skipped_reason
    assert res.input_shapes == [[4, 16]]
    norms = [s for s in res.sites if s.kind == "norm"]
    assert len(norms) == 9 and all(s.units == 64 for s in norms)
    layers = [s for s in res.sites if s.kind == "layer"]
    assert layers[0].param == "wte.weight" and layers[0].units == 64  # the embedding's output
    assert layers[-1].units == 50 and layers[-1].samples == 4 * 16  # the LM head's logits


def test_dynamic_dims_take_the_batch_size(tmp_path):
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"], name="fc"), helper.make_node("Relu", ["h"], ["y"], name="r")]
    path = save(tmp_path / "d.onnx", nodes, [tensor_in("x", ["n", 8])], [tensor_in("y", ["n", 4])],
                [init("W", rng().standard_normal((8, 4)).astype(np.float32))])
    res = _probe(path, batch_size=5)
    assert res.input_shapes == [[5, 8]]


def test_given_inputs(tmp_path):
    path = mlp_onnx(tmp_path / "m.onnx", depth=2, width=10)
    data = np.ones((3, 10), np.float32)
    res = _probe(path, inputs={"x": data})
    assert res.inputs == "file" and res.batch_size == 3 and res.input_shapes == [[3, 10]]


def test_input_shape_parsing():
    assert parse_input_shapes("input_ids=8,128") == {"input_ids": (8, 128)}
    assert parse_input_shapes(["a=1,3,224,224", "b=2"]) == {"a": (1, 3, 224, 224), "b": (2,)}
    assert parse_input_shapes("64x3x32x32") == {"": (64, 3, 32, 32)}
    for bad in ["x", "x=", "=1,2", "x=a,b", "x=-1", "x=0,3"]:
        with pytest.raises(ConfigError):
            parse_input_shapes(bad)


def test_unknown_input_shape_name(tmp_path):
    path = mlp_onnx(tmp_path / "m.onnx", depth=2, width=10)
    with pytest.raises(ProbeRequestError):
        _probe(path, input_shapes={"nope": (1, 10)})


def test_external_data_model(tmp_path):
    path = mlp_onnx(tmp_path / "ext.onnx", depth=3, width=16, external=True)
    res = _probe(path, batch_size=4)
    assert res.ran, res.skipped_reason
    assert len([s for s in res.sites if s.kind == "layer"]) == 3


@pytest.mark.parametrize("builder", ["mlp", "resnet"])
def test_memory_budget_runs_the_graph_in_parts(tmp_path, builder):
    if builder == "mlp":
        path, batch = mlp_onnx(tmp_path / "m.onnx", depth=5, width=64), 16
        budget = 16 * 64 * 4 * 2  # two sites per part
    else:  # residual blocks: cuts only where few tensors cross
        path, batch = export(TinyResNet(), (torch.randn(2, 3, 16, 16),), tmp_path / "rn.onnx"), 4
        budget = 4 * 16 * 16 * 16 * 4 * 3
    one = _probe(path, batch_size=batch)
    parts = _probe(path, batch_size=batch, memory_budget=budget)
    assert one.ran and parts.ran, parts.skipped_reason
    assert not any("parts" in n for n in one.notes)
    assert any("parts" in n for n in parts.notes), parts.notes
    key = lambda r: [(s.name, s.kind, s.param, s.units, s.depth) for s in r.sites]  # noqa: E731
    assert key(one) == key(parts)
    for a, b in zip(one.sites, parts.sites):
        assert a.std == pytest.approx(b.std, rel=1e-5, abs=1e-7)
        assert a.dead_fraction == b.dead_fraction


def test_plan_segments_cuts_where_few_tensors_cross():
    from onnx import helper as h

    from initaudit.probe.onnx_segments import plan_segments

    nodes = [h.make_node("Relu", ["x"], ["a"]), h.make_node("Relu", ["a"], ["b"]),
             h.make_node("Add", ["a", "b"], ["c"]), h.make_node("Relu", ["c"], ["d"])]
    carried = {"x", "a", "b", "c", "d"}
    assert plan_segments(nodes, {0: 10, 1: 10, 2: 10, 3: 10}, 100, carried) == [(0, 4)]
    # a cut between 1 and 2 would carry a and b; with at most one crossing tensor it waits
    assert plan_segments(nodes, {0: 10, 1: 10, 2: 10, 3: 10}, 15, carried, max_frontier=1) == [(0, 3), (3, 4)]
    assert plan_segments(nodes, {0: 10, 1: 10, 2: 10, 3: 10}, 15, carried, max_frontier=2) == [(0, 2), (2, 4)]


def test_model_onnxruntime_cannot_run(tmp_path):
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"], name="fc"),
             helper.make_node("NoSuchOp", ["h"], ["y"], name="custom", domain="com.example")]
    graph = helper.make_graph(nodes, "g", [tensor_in("x", ["n", 4])], [tensor_in("y", ["n", 4])],
                              [init("W", np.eye(4, dtype=np.float32))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.example", 1)])
    path = tmp_path / "custom.onnx"
    path.write_bytes(model.SerializeToString())
    res = _probe(path)
    assert not res.ran and "onnxruntime" in res.skipped_reason


def test_session_options_do_not_spin():
    so = session_options()
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert so.intra_op_num_threads >= 1


def test_model_outputs_restored(tmp_path):
    path = mlp_onnx(tmp_path / "m.onnx", depth=3, width=8)
    g = load_onnx(path)
    before = [o.name for o in g.onnx.model.graph.output]
    run_onnx_probe(g, path, batch_size=2)
    assert [o.name for o in g.onnx.model.graph.output] == before


def test_int_input_not_an_embedding(tmp_path):
    nodes = [helper.make_node("Cast", ["mask"], ["mf"], name="cast", to=TensorProto.FLOAT),
             helper.make_node("Mul", ["x", "mf"], ["xm"], name="mask_mul"),
             helper.make_node("MatMul", ["xm", "W"], ["y"], name="fc")]
    path = save(tmp_path / "mask.onnx", nodes,
                [tensor_in("x", ["n", 4]), tensor_in("mask", ["n", 4], TensorProto.INT64)],
                [tensor_in("y", ["n", 4])], [init("W", np.eye(4, dtype=np.float32))])
    res = _probe(path, batch_size=2)
    assert res.ran and any("mask" in n for n in res.notes)

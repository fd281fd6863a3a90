"""Run by tests/test_distributed.py under torchrun (gloo, CPU): audit an FSDP2-sharded model on
every rank, write rank 0's report, and save the sharded state as a distributed checkpoint; then
audit a model whose one weight (64M elements) is only ever allocated as shards, and record each
rank's peak memory during the audit."""

import json
import math
import sys
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import distribute_module

sys.path.insert(0, str(Path(__file__).resolve().parent))
import defective  # noqa: E402

import initaudit  # noqa: E402
from initaudit.context import Context  # noqa: E402

BIG = 8192  # an 8192 x 8192 weight: 64M elements, 256 MB in fp32


def _peak_rss_reset() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # Linux: VmHWM := VmRSS


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def _big_model(mesh) -> nn.Module:
    """One Linear built on the meta device and sharded before any storage exists, each rank's
    shard drawn from N(0, 1/fan_in): no rank ever holds the whole weight."""
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(BIG, BIG, bias=False), nn.ReLU())
    fully_shard(model[0], mesh=mesh)
    fully_shard(model, mesh=mesh)
    model.to_empty(device="cpu")
    gen = torch.Generator().manual_seed(dist.get_rank())
    with torch.no_grad():
        model[0].weight.to_local().normal_(0, 1 / math.sqrt(BIG), generator=gen)
    return model


def main(out: Path) -> None:
    warnings.simplefilter("ignore")
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    model = defective.build()
    for layer in model:
        if any(True for _ in layer.parameters()):
            fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    report = initaudit.audit(model)  # on every rank, as a training script would
    (out / f"report{rank}.json").write_text(json.dumps(report.to_json()))
    dcp.save(model.state_dict(), checkpoint_id=str(out / "dcp"))
    replicated = distribute_module(defective.build(), mesh)  # every parameter a Replicate DTensor
    (out / f"replicated{rank}.json").write_text(
        json.dumps(initaudit.audit(replicated, probe_enabled=False).to_json()))

    big = _big_model(mesh)
    local = big[0].weight.to_local()
    peaks = {}
    analyze_all = Context.analyze_all

    def measured(ctx) -> None:  # the static pass alone: the capture's forward pass all-gathers
        _peak_rss_reset()      # each layer as a training step does
        before = _status_kb("VmRSS")
        analyze_all(ctx)
        peaks["analysis"] = (_status_kb("VmHWM") - before) * 1024

    Context.analyze_all = measured
    _peak_rss_reset()
    before = _status_kb("VmRSS")
    big_report = initaudit.audit(big, probe_enabled=False)
    peaks["audit"] = (_status_kb("VmHWM") - before) * 1024
    Context.analyze_all = analyze_all
    (out / f"big{rank}.json").write_text(json.dumps({
        "report": big_report.to_json(), "peak_growth_bytes": peaks,
        "local_elements": local.numel(), "whole_bytes": BIG * BIG * 4,
        "local_sum": float(local.double().sum()), "local_sumsq": float(local.double().pow(2).sum()),
        "local_min": float(local.min()), "local_max": float(local.max())}))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))

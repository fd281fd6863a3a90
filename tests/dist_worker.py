"""Run by tests/test_distributed.py under torchrun (gloo, CPU): audit an FSDP2-sharded model on
every rank, write rank 0's report, and save the sharded state as a distributed checkpoint."""

import json
import sys
import warnings
from pathlib import Path

import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

sys.path.insert(0, str(Path(__file__).resolve().parent))
import defective  # noqa: E402

import initaudit  # noqa: E402


def main(out: Path) -> None:
    warnings.simplefilter("ignore")
    dist.init_process_group("gloo")
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    model = defective.build()
    for layer in model:
        if any(True for _ in layer.parameters()):
            fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    report = initaudit.audit(model)  # on every rank, as a training script would
    if dist.get_rank() == 0:
        (out / "report.json").write_text(json.dumps(report.to_json()))
    dcp.save(model.state_dict(), checkpoint_id=str(out / "dcp"))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))

"""Build a LLaMA-shaped sharded safetensors checkpoint (random init weights) for the benchmarks.

Tensor names, shapes and shard layout follow a Hugging Face ``save_pretrained`` of a LLaMA model:
``model.embed_tokens.weight``, per layer ``self_attn.{q,k,v,o}_proj``, ``mlp.{gate,up,down}_proj``,
two RMSNorm scales, ``model.norm.weight`` and an untied ``lm_head.weight``; shards of at most
``--shard-gb`` GB with a ``model.safetensors.index.json``. Weights are N(0, 0.02), residual output
projections N(0, 0.02 / sqrt(2 * layers)), norm scales 1.

Memory while building: one shard (the tensors of a shard are saved together).

    python benchmarks/make_llama_checkpoint.py --size 1b --dtype bf16 --out /tmp/llama-1b-bf16
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

# (hidden, layers, intermediate, vocab): 125M (GPT-2-small sized), TinyLlama 1.1B, OpenLLaMA 3B.
SIZES = {
    "125m": (768, 12, 2048, 32000),
    "1b": (2048, 22, 5632, 32000),
    "3b": (3200, 26, 8640, 32000),
}


def tensor_shapes(size: str) -> list[tuple[str, tuple[int, ...], float]]:
    """(name, shape, std) in the order save_pretrained writes them; std 0 means ones (norms)."""
    d, layers, ffn, vocab = SIZES[size]
    out = [("model.embed_tokens.weight", (vocab, d), 0.02)]
    resid = 0.02 / math.sqrt(2 * layers)
    for i in range(layers):
        p = f"model.layers.{i}."
        out += [(p + "input_layernorm.weight", (d,), 0.0),
                (p + "self_attn.q_proj.weight", (d, d), 0.02),
                (p + "self_attn.k_proj.weight", (d, d), 0.02),
                (p + "self_attn.v_proj.weight", (d, d), 0.02),
                (p + "self_attn.o_proj.weight", (d, d), resid),
                (p + "post_attention_layernorm.weight", (d,), 0.0),
                (p + "mlp.gate_proj.weight", (ffn, d), 0.02),
                (p + "mlp.up_proj.weight", (ffn, d), 0.02),
                (p + "mlp.down_proj.weight", (d, ffn), resid)]
    out += [("model.norm.weight", (d,), 0.0), ("lm_head.weight", (vocab, d), 0.02)]
    return out


def parameter_count(size: str) -> int:
    return sum(math.prod(s) for _, s, _ in tensor_shapes(size))


def build(size: str, dtype: str, out: Path, shard_gb: float = 2.0, seed: int = 0) -> Path:
    """Write the checkpoint under ``out``; returns the index file's path."""
    import torch
    from safetensors.torch import save_file

    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    itemsize = torch.empty(0, dtype=torch_dtype).element_size()
    specs = tensor_shapes(size)
    total_bytes = sum(math.prod(s) for _, s, _ in specs) * itemsize
    n_shards = max(1, math.ceil(total_bytes / (shard_gb * 1e9)))
    limit = total_bytes / n_shards
    out.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    weight_map: dict[str, str] = {}
    shard: dict[str, torch.Tensor] = {}
    shard_bytes, index = 0, 1

    def flush() -> None:
        nonlocal shard, shard_bytes, index
        name = f"model-{index:05d}-of-{n_shards:05d}.safetensors"
        save_file(shard, str(out / name), metadata={"format": "pt"})
        weight_map.update({k: name for k in shard})
        shard, shard_bytes, index = {}, 0, index + 1

    for name, shape, std in specs:
        if std == 0.0:
            t = torch.ones(shape, dtype=torch_dtype)
        else:
            t = (torch.randn(shape, generator=g) * std).to(torch_dtype)
        shard[name] = t
        shard_bytes += t.numel() * itemsize
        if shard_bytes >= limit and index < n_shards:
            flush()
    if shard:
        # the last shard keeps the planned name even when rounding made fewer
        flush()
    files = sorted(set(weight_map.values()))
    if len(files) != n_shards:  # rename so every name says the true count
        renamed = {f: f"model-{i:05d}-of-{len(files):05d}.safetensors" for i, f in enumerate(files, 1)}
        for old, new in renamed.items():
            (out / old).rename(out / new)
        weight_map = {k: renamed[v] for k, v in weight_map.items()}
    index_path = out / "model.safetensors.index.json"
    index_path.write_text(json.dumps({"metadata": {"total_size": total_bytes}, "weight_map": weight_map},
                                     indent=2))
    return index_path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=sorted(SIZES), required=True)
    ap.add_argument("--dtype", choices=["fp32", "bf16", "fp16"], default="bf16")
    ap.add_argument("--out", type=Path, required=True, help="folder to write (created)")
    ap.add_argument("--shard-gb", type=float, default=2.0, help="largest shard in GB (default 2)")
    args = ap.parse_args()
    t0 = time.perf_counter()
    index = build(args.size, args.dtype, args.out, args.shard_gb)
    size = sum(f.stat().st_size for f in args.out.glob("*.safetensors"))
    print(f"{index} ({parameter_count(args.size) / 1e9:.2f}B parameters, {size / 1e9:.2f} GB) "
          f"in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()

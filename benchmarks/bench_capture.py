"""Cost of recording the dataflow from a forward pass (initaudit.capture) against a plain forward.

    python benchmarks/bench_capture.py [--quick]

For Hugging Face GPT-2 and LLaMA built from small configs (no download), prints the time of a
plain forward (eval, no grad) and of the capture (snapshot, hooks, the recorder's forward, the
pattern pass, restore) on the same inputs, measured in the same round, and the median ratio over
rounds. Two input sizes: the capture's own (batch 2 of 16 tokens: what an audit runs) and the
probe's default batch (64 of 16 tokens). The recorder's cost is per op, not per element, so the
ratio is highest on tiny inputs, where the absolute cost is smallest.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def models(quick: bool):
    import transformers

    layers = 2 if quick else 4
    yield "GPT-2 tiny", transformers.GPT2LMHeadModel(transformers.GPT2Config(
        n_layer=layers, n_embd=128, n_head=4, vocab_size=1024, n_positions=128, bos_token_id=0,
        eos_token_id=0))
    yield "LLaMA tiny", transformers.LlamaForCausalLM(transformers.LlamaConfig(
        vocab_size=1024, hidden_size=128, intermediate_size=256, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128))


def bench(name: str, model: torch.nn.Module, batch: int, rounds: int) -> float:
    from initaudit.capture import capture_dataflow
    from initaudit.loaders.target import load_target
    from initaudit.probe import ProbeOptions, probe_inputs

    graph, _ = load_target(model)
    inputs = probe_inputs(graph, ProbeOptions(batch_size=batch), None)
    model.eval()

    def plain():
        with torch.no_grad():
            model(*inputs.args, **inputs.kwargs)

    plain()
    ratios, tp, tc = [], [], []
    for _ in range(rounds):
        t = time.perf_counter()
        plain()
        a = time.perf_counter() - t
        t = time.perf_counter()
        reason = capture_dataflow(graph, inputs)
        b = time.perf_counter() - t
        assert reason is None, reason
        tp.append(a)
        tc.append(b)
        ratios.append(b / a)
    ratio = statistics.median(ratios)
    print(f"{name:12s} batch {batch:3d}: plain forward {statistics.median(tp) * 1e3:7.1f} ms, "
          f"capture {statistics.median(tc) * 1e3:7.1f} ms, capture / forward {ratio:5.2f}x "
          f"({len(graph.nodes)} nodes)")
    return ratio


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 layers, 3 rounds")
    args = ap.parse_args()
    torch.manual_seed(0)
    rounds = 3 if args.quick else 7
    for name, model in models(args.quick):
        for batch in (2, 64):
            bench(name, model, batch, rounds)


if __name__ == "__main__":
    main()

"""The forward/backward probe: push a batch through the model (and back) and record what the
weights do, in format-neutral records (:mod:`initaudit.probe.result`) the probe rules read.

:func:`run_probe` picks the probe for the model's format: the torch probe (hooks on a live
module: factories, ``nn.Module`` objects, checkpoints with ``--model``), or the ONNX probe
(onnxruntime). It never raises for a model that cannot be probed: the result then has
``ran=False`` and a one-line ``skipped_reason``, and the static audit reports as usual.
An unreadable ``--inputs`` file is a bad argument and raises :class:`TargetError`, a bad
``--device`` or ``--input-shape`` :class:`ConfigError` (exit 2).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from initaudit.errors import ConfigError
from initaudit.graph import ModelGraph
from initaudit.probe.options import ProbeOptions
from initaudit.probe.result import GradStats, ProbeResult, SiteStats

__all__ = ["ProbeOptions", "ProbeResult", "SiteStats", "GradStats", "run_probe", "start_probe",
           "capture_graph", "probe_inputs"]


def start_probe(graph: ModelGraph) -> Any:
    """Start now what the probe of ``graph`` can start before it runs, so that it overlaps the
    static pass: an ONNX graph's isolated onnxruntime worker, whose imports take about 0.5 s
    (None for other formats, or without onnxruntime). Pass it to :func:`run_probe`; the caller
    closes it (``.close()``) when the probe is done or will not run."""
    if graph.module is None and graph.format == "onnx":
        from initaudit.probe.onnx_probe import start_runtime

        return start_runtime()
    return None


def run_probe(graph: ModelGraph, options: ProbeOptions, factory: Any = None, runtime: Any = None) -> ProbeResult:
    """Probe the model ``graph`` describes; ``factory`` may supply ``example_inputs()``;
    ``runtime`` is what :func:`start_probe` started (the ONNX probe's worker)."""
    if options.device == "auto":  # cuda when available, else cpu
        import dataclasses

        import torch

        options = dataclasses.replace(options, device="cuda" if torch.cuda.is_available() else "cpu")
    if options.device is not None:
        import torch

        try:
            torch.device(options.device)
        except (RuntimeError, TypeError) as exc:
            raise ConfigError(f"--device {options.device!r}: not a device (cpu, cuda, cuda:N)") from exc
    if graph.module is not None:
        meta = sum(1 for t in (*graph.module.parameters(), *graph.module.buffers()) if t.device.type == "meta")
        if meta:
            return ProbeResult(ran=False, seed=options.seed, skipped_reason=(
                f"{meta} tensor(s) are on the meta device (no values to run with); materialise them "
                "with to_empty() and reset_parameters()"))
        return _probe_torch(graph, options, factory)
    if graph.format == "onnx":
        return _probe_onnx(graph, options, runtime)
    reason = (f"static only: a {graph.format} file holds weights but no architecture to run "
              "(give --model pkg.module:factory to probe it)")
    if isinstance(options.inputs, (str, Path)):  # still read and checked: a bad file is exit 2
        from initaudit.probe.inputs import load_inputs_file

        import sys

        load_inputs_file(options.inputs)
        print(f"initaudit: warning: --inputs {options.inputs} was checked but not used: the probe cannot "
              f"run a {graph.format} file without an architecture (give --model pkg.module:factory)",
              file=sys.stderr)
        reason += f"; --inputs {options.inputs} was checked but not used"
    return ProbeResult(ran=False, seed=options.seed, skipped_reason=reason)


CAPTURE_BATCH = 2  # synthetic inputs for the dataflow capture: the dataflow does not depend on it


def probe_inputs(graph: ModelGraph, options: ProbeOptions, factory: Any, batch: int | None = None):
    """The probe's inputs: ``--inputs``, else ``example_inputs()``, else synthetic ones (of
    ``batch`` rows, default ``--batch-size``). Raises ProbeInputError when none can be made."""
    import dataclasses

    from initaudit.probe.inputs import batch_dim, cast_to_model, from_object, load_inputs_file, synthesize

    example = _example_inputs(factory) if options.inputs is None else None
    if isinstance(options.inputs, (str, Path)):
        made = load_inputs_file(options.inputs)
    elif options.inputs is not None:
        made = from_object(options.inputs, "file", "inputs given to audit()")
    elif example is not None:
        made = from_object(example, "file", "example_inputs() next to the factory")
    else:
        made = synthesize(graph.module, graph, batch or options.batch_size, options.seed,
                          options.input_shapes)
    # given inputs are float32 wherever they come from (.npy/.npz hold no bfloat16): a bf16/fp16
    # model gets them in its own dtype, as the user's own code casts them (x.to(model.dtype))
    made = cast_to_model(made, graph.module)
    return dataclasses.replace(made, batch_dim=batch_dim(graph.module, graph))


def capture_graph(graph: ModelGraph, options: ProbeOptions, factory: Any = None) -> None:
    """Record the dataflow of a live module from one forward pass on the probe's inputs
    (:mod:`initaudit.capture`); where that cannot run, the torch.fx / module-order graph stays
    and a note says why. Runs before the analysis, with the probe on or off."""
    from initaudit.capture import capture_dataflow
    from initaudit.probe.inputs import ProbeInputError

    module = graph.module
    if module is None or any(t.device.type == "meta" for t in (*module.parameters(), *module.buffers())):
        return
    fallback = {"fx": "torch.fx (symbolic)", "module-order": "module registration order (a guess)"}.get(
        graph.capture or "", str(graph.capture))
    try:
        inputs = probe_inputs(graph, options, factory, batch=CAPTURE_BATCH)
    except ProbeInputError as exc:
        graph.notes.append(f"dataflow from {fallback}: no inputs to record a forward pass ({exc})")
        return
    from initaudit.probe.torch_probe import _device_of

    reason = capture_dataflow(graph, inputs.to(_device_of(module)))
    if reason is not None:
        graph.notes.append(f"dataflow from {fallback}: the forward pass could not be recorded ({reason})")


def _probe_torch(graph: ModelGraph, options: ProbeOptions, factory: Any) -> ProbeResult:
    from initaudit.probe.inputs import ProbeInputError
    from initaudit.probe.torch_probe import probe_module

    module = graph.module
    try:
        inputs = probe_inputs(graph, options, factory)
    except ProbeInputError as exc:
        return ProbeResult(ran=False, seed=options.seed, skipped_reason=f"no probe inputs: {exc}")
    result = probe_module(module, graph, inputs, options)
    if inputs.convention:
        result.convention = inputs.convention
        if result.ran:
            result.notes.append(f"inputs by convention: {inputs.source}")
    if not result.ran and inputs.kind == "synthetic" and result.skipped_reason:
        result.skipped_reason += (f" (synthetic inputs: {inputs.source}; give --input-shape or "
                                  "--inputs)")
    return result


def _probe_onnx(graph: ModelGraph, options: ProbeOptions, runtime: Any = None) -> ProbeResult:
    """The ONNX probe (forward only). Inputs from a file are fed by name: a dict's keys, or the
    model's inputs in order for a tensor or a tuple; an unnamed --input-shape goes to the model's
    only input."""
    from initaudit.probe.inputs import load_inputs_file
    from initaudit.probe.onnx_probe import run_onnx_probe

    names = _onnx_input_names(graph)
    feeds = None
    if options.inputs is not None:
        if isinstance(options.inputs, (str, Path)):
            given = load_inputs_file(options.inputs)
        else:
            from initaudit.probe.inputs import from_object

            given = from_object(options.inputs, "file", "inputs given to audit()")
        feeds = {k: v.numpy() for k, v in given.kwargs.items()}
        feeds.update({n: t.numpy() for n, t in zip(names, given.args)})
    shapes = dict(options.input_shapes)
    if "" in shapes and len(names) == 1:
        shapes[names[0]] = shapes.pop("")
    stats_fn = None
    if options.histogram_bins:  # the same summary as the torch probe, histograms included
        import functools

        from initaudit.probe.stats import site_stats

        stats_fn = functools.partial(site_stats, histogram_bins=options.histogram_bins)
    source = f"{options.inputs}: --inputs" if isinstance(options.inputs, (str, Path)) else None
    return run_onnx_probe(graph, batch_size=options.batch_size, seed=options.seed, inputs=feeds,
                          input_shapes=shapes, batch_size_given=options.batch_size_given,
                          inputs_source=source, site_stats=stats_fn, runtime=runtime)


def _onnx_input_names(graph: ModelGraph) -> list[str]:
    model = getattr(getattr(graph, "onnx", None), "model", None)
    if model is None:
        return []
    inits = {i.name for i in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in inits]


def _example_inputs(factory: Any) -> Any:
    fn = getattr(factory, "example_inputs", None)
    if fn is None:
        return None
    try:
        return fn()
    except Exception as exc:
        from initaudit.probe.inputs import ProbeInputError

        raise ProbeInputError(f"example_inputs() raised {type(exc).__name__}: {exc}") from exc

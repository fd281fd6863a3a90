"""What a rule sees: the model description, the stage, lazily computed per-tensor analyses,
the static signal prediction and, when it ran, the probe."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from initaudit.analysis import AnalysisOptions, TensorAnalysis, analyze
from initaudit.graph import ModelGraph, Param, off_dataflow
from initaudit.moments import TensorStats
from initaudit.propagation import LayerSignal, predict
from initaudit.runtime_scale import applied_tensor_stats


@dataclass
class Context:
    graph: ModelGraph
    stage: str  # "init" | "trained"
    analysis_options: AnalysisOptions = field(default_factory=AnalysisOptions)
    probe: Any = None  # initaudit.probe result when the probe ran
    _cache: dict[str, TensorAnalysis] = field(default_factory=dict)
    _assessments: dict[str, Any] = field(default_factory=dict)
    _applied: dict[str, TensorStats] = field(default_factory=dict)
    _measured: tuple[int, list] | None = None  # (id of the probe result, its measured profile)
    on_tensor: Callable[[Param], None] | None = None  # progress callback

    def analysis(self, name: str) -> TensorAnalysis:
        """Value-level facts about one tensor, computed on first use and kept."""
        if name not in self._cache:
            param = self.graph.params[name]
            tensor = self.graph.load_tensor(name)  # a DTensor shard is read where it is
            self._cache[name] = analyze(tensor, param, self.analysis_options)
            del tensor
            if self.on_tensor:
                self.on_tensor(param)
        return self._cache[name]

    def analyze_all(self) -> None:
        """Read every tensor once, in storage order (what a checkpoint reader does best): in a
        pool of worker processes for a large checkpoint whose tensors they can reopen
        (initaudit.pool), else here."""
        from initaudit import pool
        from initaudit.engine import stored_bytes

        source = self.graph.tensor_source
        todo = [p for n, p in self.graph.params.items() if n not in self._cache]
        remote, workers = self._pooled(todo)
        close = getattr(self.graph.load_tensor, "close", None)
        if workers and remote:
            if close is not None:
                close()  # no mapping of this process is inherited by the workers

            def keep(name: str, result: TensorAnalysis) -> None:
                self._cache[name] = result
                if self.on_tensor:
                    self.on_tensor(self.graph.params[name])

            pool.analyze_in_workers(remote, source, self.analysis_options, workers, stored_bytes, keep)
        for name in self.graph.params:
            self.analysis(name)
        if close is not None:
            close()  # analysed: the last shard is unmapped (a later read reopens it)

    def edge_ratios(self) -> dict[str, float | None]:
        """The stage evidence's spectra the analyses measured (``AnalysisOptions.spectra``)."""
        return {n: a.edge_ratio for n, a in self._cache.items() if a.edge_measured}

    def assessment(self, name: str) -> Any:
        """The scheme judgement of one weight (schemes.assess at its default tolerance: a
        ScaleAssessment, or None where no scheme applies), computed on first use and kept; the
        layer table and the depth rules read the same one."""
        if name not in self._assessments:
            from initaudit.schemes import assess

            g, p, a = self.graph, self.graph.params[name], self.analysis(name)
            self._assessments[name] = assess(
                p, self.applied_stats(name), a.orthogonal_gain, g.family, g.has_architecture and name not in self._off_dataflow,
                distribution=a.shape.distribution if a.shape else None, identity=a.identity_gain)
        return self._assessments[name]

    @cached_property
    def _off_dataflow(self) -> set[str]:
        return off_dataflow(self.graph)

    def _pooled(self, params: list[Param]) -> tuple[list[Param], int]:
        """The params a worker pool would stream (those the tensor source can reopen, in a
        checkpoint large enough for workers) and the worker count; ([], 0) when serial."""
        from initaudit import pool
        from initaudit.engine import stored_bytes

        source = self.graph.tensor_source
        reopenable = source.names if source is not None else ()
        remote = [p for p in params if p.name in reopenable]
        workers = pool.worker_count(sum(stored_bytes(p) for p in remote))
        return (remote, workers) if workers and remote else ([], 0)

    @cached_property
    def signal(self) -> list[LayerSignal]:
        """The static prediction; dense chains from the input are carried through their actual
        weights (initaudit.unitwise) unless a worker pool streams the checkpoint."""
        _, workers = self._pooled(list(self.graph.params.values()))
        return predict(self.graph, self.applied_stats, None if workers else self._tensor)

    def applied_stats(self, name: str) -> TensorStats:
        """The statistics of the weight as the signal sees it: the stored tensor's, times the
        factor its layer multiplies it by at run time (``Param.runtime_scale``, measured), or
        those of the tensor its layer's per-row map makes of it (``Param.runtime_rows``: weight
        standardisation; with its rows' sums measured), computed once."""
        p = self.graph.params[name]
        if p.runtime_rows is not None:
            if name not in self._applied:
                self._applied[name] = applied_tensor_stats(self._tensor(name))
            return self._applied[name]
        stats, s = self.analysis(name).stats, p.runtime_scale
        if s == 1.0:
            return stats
        lo, hi = sorted((stats.min * s, stats.max * s))
        return dataclasses.replace(stats, mean=stats.mean * s, std=stats.std * abs(s), min=lo, max=hi)

    def measured_profile(self) -> list:
        """The probe's measurement beside each static entry (``probe.profile.measured_profile``:
        MeasuredLayer rows, empty without a probe), computed once per probe result and shared by
        the rules and the layer table."""
        if self._measured is None or self._measured[0] != id(self.probe):
            from initaudit.probe.profile import measured_profile

            self._measured = (id(self.probe), measured_profile(self.signal, self.probe, self.graph.params, self.graph))
        return self._measured[1]

    def _tensor(self, name: str):
        """A tensor by name for the per-unit pass (None when not in the model), as applied."""
        if name not in self.graph.params:
            return None
        p = self.graph.params[name]
        t = self.graph.load_tensor(name)
        if p.runtime_rows is not None:
            return p.runtime_rows.apply(t)
        return t if p.runtime_scale == 1.0 else t * p.runtime_scale

    @property
    def trained(self) -> bool:
        return self.stage == "trained"

"""What a rule sees: the model description, the stage, lazily computed per-tensor analyses,
the static signal prediction and, when it ran, the probe."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from initaudit.analysis import AnalysisOptions, TensorAnalysis, analyze
from initaudit.graph import ModelGraph, Param
from initaudit.propagation import LayerSignal, predict


@dataclass
class Context:
    graph: ModelGraph
    stage: str  # "init" | "trained"
    analysis_options: AnalysisOptions = field(default_factory=AnalysisOptions)
    probe: Any = None  # initaudit.probe result when the probe ran
    _cache: dict[str, TensorAnalysis] = field(default_factory=dict)
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
        """Read every tensor once, in storage order (what a checkpoint reader does best)."""
        for name in self.graph.params:
            self.analysis(name)

    @cached_property
    def signal(self) -> list[LayerSignal]:
        return predict(self.graph, lambda n: self.analysis(n).stats)

    @property
    def trained(self) -> bool:
        return self.stage == "trained"

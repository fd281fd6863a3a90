"""initaudit's built-in rules. They use the public rule API (initaudit.rule) and reach the
engine through the ``initaudit.rules`` entry point, exactly as third-party plugins do."""

from initaudit.rules.correlation import MeasuredCorrelationCollapse, PredictedCorrelationCollapse
from initaudit.rules.depth import PredictedExploding, PredictedVanishing
from initaudit.rules.probe import PROBE_RULES
from initaudit.rules.normalization import DegenerateNormalization
from initaudit.rules.init_scale import InitScale
from initaudit.rules.structure import DuplicateUnits, RecurrentSpectrum
from initaudit.rules.weights import (
                                       ConstantWeights,
                                       MeanShift,
                                       NonFiniteValues,
                                       UninitializedMemory,
)

BUILTIN_RULES = [
    NonFiniteValues, ConstantWeights, DuplicateUnits, InitScale, MeanShift, UninitializedMemory,
    RecurrentSpectrum, DegenerateNormalization, PredictedVanishing, PredictedExploding,
    PredictedCorrelationCollapse, *PROBE_RULES, MeasuredCorrelationCollapse,
]

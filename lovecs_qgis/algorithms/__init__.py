"""The LoveCS Processing algorithms (each runs one ``lovecs`` engine command)."""

from .adapt import AdaptAlgorithm
from .classify import ClassifyAlgorithm
from .evaluate import EvaluateAlgorithm
from .evaluate_points import EvaluatePointsAlgorithm
from .refine import RefineAlgorithm
from .trainsource import TrainSourceAlgorithm

ALGORITHMS = (
    ClassifyAlgorithm,
    AdaptAlgorithm,
    RefineAlgorithm,
    TrainSourceAlgorithm,
    EvaluateAlgorithm,
    EvaluatePointsAlgorithm,
)

__all__ = [
    "ALGORITHMS",
    "AdaptAlgorithm",
    "ClassifyAlgorithm",
    "EvaluateAlgorithm",
    "EvaluatePointsAlgorithm",
    "RefineAlgorithm",
    "TrainSourceAlgorithm",
]

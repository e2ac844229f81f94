"""The LoveCS Processing algorithms (each runs one ``lovecs`` engine command)."""

from .adapt import AdaptAlgorithm
from .classify import ClassifyAlgorithm
from .evaluate import EvaluateAlgorithm
from .evaluate_points import EvaluatePointsAlgorithm
from .trainsource import TrainSourceAlgorithm

ALGORITHMS = (
    ClassifyAlgorithm,
    AdaptAlgorithm,
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
    "TrainSourceAlgorithm",
]

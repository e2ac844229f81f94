"""The LoveCS Processing algorithms (each runs one ``lovecs`` engine command)."""

from .adapt import AdaptAlgorithm
from .classify import ClassifyAlgorithm
from .evaluate import EvaluateAlgorithm
from .trainsource import TrainSourceAlgorithm

ALGORITHMS = (ClassifyAlgorithm, AdaptAlgorithm, TrainSourceAlgorithm, EvaluateAlgorithm)

__all__ = [
    "ALGORITHMS",
    "AdaptAlgorithm",
    "ClassifyAlgorithm",
    "EvaluateAlgorithm",
    "TrainSourceAlgorithm",
]

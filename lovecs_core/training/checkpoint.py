"""Resumable checkpoints: ``lovecs train``'s (``OUT.ckpt``, written every ``--checkpoint-every``
iterations and read by ``--resume``), and the checks the adaptation's checkpoints share with it
(``adaptation/resume.py``).

A checkpoint is written under a temporary name, then renamed; a full disk is one line with no
partial file left. Before one is resumed it is checked: readable, its weights finite, its
iteration (and its record of losses) one the run could have reached, its tensors the shapes of
the network. A checkpoint that fails is refused with one line naming it and ending "delete it to
start over"; it is kept, for the user to look at or delete.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from ..contract import part_path
from ..model.card import write_failure
from .sampling import WindowSampler

__all__ = [
    "CheckpointError",
    "does_not_fit",
    "iteration_problem",
    "load_checkpoint",
    "non_finite_weights",
    "refused",
    "resume_training",
    "save_checkpoint",
    "unreadable",
]


class CheckpointError(RuntimeError):
    """A checkpoint cannot be written or resumed; the message says what to do."""


# -- the words of a refusal, one line each ---------------------------------------------------------
def _one_line(exc: BaseException, limit: int = 300) -> str:
    return " ".join(str(exc).split())[:limit]


def unreadable(path: Path | str, exc: BaseException) -> str:
    return f"the checkpoint {path} cannot be read ({_one_line(exc)}); delete it to start over"


def refused(path: Path | str, problem: str) -> str:
    return f"the checkpoint {path} cannot be resumed: {problem}; delete it to start over"


def does_not_fit(path: Path | str, exc: BaseException) -> str:
    return (
        f"the checkpoint {path} does not fit this model ({_one_line(exc)}); delete it to start over"
    )


# -- what a resumable checkpoint must be ----------------------------------------------------------
def non_finite_weights(weights: Any) -> Optional[str]:
    """Weights that are not finite (None: all are)."""
    if not isinstance(weights, dict):
        return "its weights are not a table of tensors"
    bad = [
        k
        for k, v in weights.items()
        if isinstance(v, torch.Tensor) and v.is_floating_point() and not bool(v.isfinite().all())
    ]
    if bad:
        return f"{len(bad)} of its weights ({bad[0]} ...) are not finite (NaN or infinity)"
    return None


def iteration_problem(it: Any, iterations: Any) -> Optional[str]:
    """An iteration the run could not have reached (None: a plausible one); ``iterations``:
    the run's count, when known."""
    if not isinstance(it, int) or it < 0 or (isinstance(iterations, int) and it > iterations):
        return f"it says iteration {it!r}, but this run has {iterations} iterations"
    return None


#: What ``lovecs train`` writes in its checkpoint.
TRAIN_KEYS = ("model", "optimizer", "scheduler", "iteration", "losses", "rng")


def _train_problem(state: Any, iterations: int) -> Optional[str]:
    """What makes ``lovecs train``'s checkpoint unusable (None: nothing)."""
    if not isinstance(state, dict):
        return "it is not a training checkpoint"
    missing = [key for key in TRAIN_KEYS if key not in state]
    if missing:
        return f"it lacks {', '.join(map(repr, missing))}"
    it, losses = state["iteration"], state["losses"]
    problem = non_finite_weights(state["model"]) or iteration_problem(it, iterations)
    if problem is None and (not isinstance(losses, list) or len(losses) != it):
        held = len(losses) if isinstance(losses, list) else "no"
        problem = f"it holds {held} losses for {it} iterations"
    return problem


# -- lovecs train's checkpoint ---------------------------------------------------------------------
def save_checkpoint(path: Path, **state: Any) -> None:
    """Write atomically; a failure (a full disk) is one line, with no partial file left."""
    tmp = part_path(path)
    tmp.parent.mkdir(parents=True, exist_ok=True)  # the model's folder may not exist yet
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:
        raise CheckpointError(write_failure(path, exc, "checkpoint")) from None
    finally:
        tmp.unlink(missing_ok=True)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Tensors and plain values only (``weights_only=True``): a checkpoint cannot run code. One
    that cannot be read is a :class:`CheckpointError`."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, not a checkpoint, not ours
        raise CheckpointError(unreadable(path, exc)) from None


def resume_training(
    path: Path,
    iterations: int,
    model: nn.Module,
    optimizer: Any,
    scheduler: Any,
    sampler: WindowSampler,
) -> tuple[int, list[float]]:
    """Check ``lovecs train``'s checkpoint and load it into the training state; returns
    ``(iteration, losses)``. One that cannot be resumed is a :class:`CheckpointError`."""
    state = load_checkpoint(path)
    problem = _train_problem(state, iterations)
    if problem:
        raise CheckpointError(refused(path, problem))
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        sampler.rng.bit_generator.state = json.loads(state["rng"])
    except (RuntimeError, KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(does_not_fit(path, exc)) from None
    return int(state["iteration"]), list(state["losses"])

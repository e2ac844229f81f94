"""Resumable adaptation (``lovecs adapt --resume``).

After each self-training round, the model, optimiser, schedule, loss scaler, random generators
and the rounds' records go to ``OUT.ckpt`` beside the output model (written under a temporary
name, then renamed). A run given ``resume`` continues after the last completed round; the
reference map is recomputed from the source model (it is deterministic), so nothing else needs
saving. The checkpoint records what the run was (model and scene files, method, bands, source
data, settings but the device) and is refused, naming what differs, for any other run.

The checkpoint is removed when the adaptation completes; it is kept when the run is cancelled,
killed or fails after a round, so that ``--resume`` can continue it (delete it to start over).
The QGIS plugin, which does not resume, removes it with the partial files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from torch import nn

from ..contract import checkpoint_path, part_path
from ..model import card
from ..training.checkpoint import (
    does_not_fit,
    iteration_problem,
    non_finite_weights,
    refused,
    unreadable,
)
from ..training.sampling import WindowSampler
from .config import AdaptConfig, AdaptError

log = logging.getLogger(__name__)

CHECKPOINT_VERSION = 1
#: Settings that may change between a run and its resumption.
FREE_SETTINGS = ("device",)


def _file_id(path: str | os.PathLike[str]) -> str:
    p = Path(path).resolve()
    st = p.stat()
    return f"{p} ({st.st_size} bytes, modified {st.st_mtime_ns})"


def _weights_id(net: nn.Module) -> str:
    digest = hashlib.sha256()
    for name, value in net.state_dict().items():
        digest.update(name.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return f"in-memory model {digest.hexdigest()[:16]}"


def run_identity(
    model: str | os.PathLike[str] | nn.Module,
    target: str | os.PathLike[str],
    method: str,
    cfg: AdaptConfig,
    bands: Sequence[int],
    source_pairs: Optional[Sequence[tuple[Path, Path]]],
) -> dict[str, Any]:
    """What a checkpoint must match to be resumed (plain JSON values)."""
    identity: dict[str, Any] = {
        "model": _weights_id(model) if isinstance(model, nn.Module) else _file_id(model),
        "scene": _file_id(target),
        "method": method,
        "bands": list(bands),
        "source data": [[_file_id(i), _file_id(lab)] for i, lab in source_pairs or ()],
    }
    for key, value in cfg.to_dict().items():
        if key not in FREE_SETTINGS:
            identity[f"setting {key}"] = value
    return json.loads(json.dumps(identity))  # tuples as lists, as they come back


class AdaptCheckpoint:
    """The checkpoint of one adaptation run: read (when resuming), written, removed."""

    def __init__(self, out: str | os.PathLike[str], identity: dict[str, Any], resume: bool):
        self.path = checkpoint_path(Path(out))
        self.identity = identity
        self.resume = resume

    def load(self) -> Optional[dict[str, Any]]:
        """The saved state to resume from (None: start from the beginning)."""
        if not self.resume:
            if self.path.is_file():
                log.warning(
                    "%s is the checkpoint of an earlier, unfinished adaptation: this run starts "
                    "from the beginning and replaces it (--resume continues it instead)",
                    self.path,
                )
            return None
        if not self.path.is_file():
            log.info("no checkpoint %s: the adaptation starts from the beginning", self.path)
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
            version = state.get("version")
            theirs = json.loads(state["identity"])
        except Exception as exc:  # unreadable, truncated, not ours
            raise AdaptError(unreadable(self.path, exc)) from None
        if version != CHECKPOINT_VERSION:
            raise AdaptError(
                f"the checkpoint {self.path} was written by another version of LoveCS; delete "
                "it to start over"
            )
        differ = sorted(
            k for k in set(theirs) | set(self.identity) if theirs.get(k) != self.identity.get(k)
        )
        if differ:
            raise AdaptError(
                f"the checkpoint {self.path} belongs to another adaptation (different "
                f"{', '.join(differ)}): rerun with the same model, scene and settings to "
                "resume it, or delete it to start over"
            )
        problem = checkpoint_problem(state, self.identity)
        if problem:
            raise AdaptError(refused(self.path, problem))
        return {**state, PATH_KEY: str(self.path)}

    def save(self, **state: Any) -> None:
        """Write the state atomically (a kill while writing leaves the previous checkpoint); a
        full disk is an :class:`AdaptError` saying so, with nothing left behind."""
        tmp = part_path(self.path)
        try:
            torch.save(
                {"version": CHECKPOINT_VERSION, "identity": json.dumps(self.identity), **state},
                tmp,
            )
            os.replace(tmp, self.path)
        except (OSError, RuntimeError) as exc:
            tmp.unlink(missing_ok=True)
            raise AdaptError(card.write_failure(self.path, exc, "checkpoint")) from None
        finally:
            tmp.unlink(missing_ok=True)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


#: Where :meth:`AdaptCheckpoint.load` notes the checkpoint's file in the state it returns.
PATH_KEY = "_path"


def _rounds_planned(identity: dict[str, Any]) -> Optional[int]:
    iterations = identity.get("setting iterations")
    refresh = identity.get("setting refresh_every")
    if not isinstance(iterations, int) or not isinstance(refresh, int):
        return None
    return max(1, -(-max(1, iterations) // max(1, refresh)))


def checkpoint_problem(state: Any, identity: dict[str, Any]) -> Optional[str]:
    """What makes a checkpoint whose identity matches unusable (None: nothing): weights that
    are not finite, a round, iteration or record count the run could not have reached (the
    weights and iteration checks are the ones ``lovecs train --resume`` makes too)."""
    try:
        weights = state["model"]
        progress = json.loads(state["progress"])
        done, it = progress["round"], progress["iteration"]
        records, chunk = progress["rounds"], progress["chunk"]
    except (KeyError, TypeError, ValueError) as exc:
        return f"it lacks {exc}"
    problem = non_finite_weights(weights)
    if problem:
        return problem
    planned = _rounds_planned(identity)
    iterations = identity.get("setting iterations")
    if not isinstance(done, int) or done < 1 or (planned is not None and done > planned):
        return f"it says round {done!r}, but this run has rounds 1 to {planned}"
    problem = iteration_problem(it, iterations)
    if problem:
        return problem
    if not isinstance(records, list) or len(records) != done:
        return f"it holds {len(records) if isinstance(records, list) else 'no'} round records for {done} rounds"
    if not isinstance(chunk, int) or chunk < 1:
        return f"its batch chunk {chunk!r} is not a positive whole number"
    return None


def training_state(
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler,
    src_sampler: Optional[WindowSampler],
    **progress: Any,
) -> dict[str, Any]:
    """Everything self-training needs to go on after a round (``progress``: plain values such as
    the round, the iteration, the records and losses; stored as JSON)."""
    return {
        "model": net.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "source_rng": json.dumps(src_sampler.rng.bit_generator.state) if src_sampler else "",
        "torch_rng": torch.get_rng_state(),
        "progress": json.dumps(progress),
    }


def restore_training(
    state: dict[str, Any],
    net: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler,
    src_sampler: Optional[WindowSampler],
) -> dict[str, Any]:
    """Load a :func:`training_state` back; returns its ``progress`` values. A state that does
    not fit the network or the optimiser is an :class:`AdaptError` saying to delete it."""
    try:
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if state["scaler"]:
            scaler.load_state_dict(state["scaler"])
    except (RuntimeError, KeyError, ValueError, TypeError) as exc:
        raise AdaptError(does_not_fit(state.get(PATH_KEY, ""), exc)) from None
    if src_sampler is not None and state["source_rng"]:
        src_sampler.rng.bit_generator.state = json.loads(state["source_rng"])
    torch.set_rng_state(state["torch_rng"])
    return dict(json.loads(state["progress"]))

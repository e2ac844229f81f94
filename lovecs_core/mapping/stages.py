"""The plumbing between the mapping pipeline's stages (:mod:`.pipeline`): batches of tiles,
bounded queues that give up when the run stops, a failure handed to the next stage, the end
mark, and giving freed heap memory back to the system."""

from __future__ import annotations

import ctypes
import ctypes.util
import queue
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
import torch

from .tiling import Tile

#: What a stage puts last in its queue.
END = object()


@dataclass
class Batch:
    """Tiles on their way through the stages: their validity, the tiles to compute, their
    inputs (stacked for the model) and the model's probabilities."""

    tiles: list[Tile] = field(default_factory=list)
    valid: list[Optional[np.ndarray]] = field(default_factory=list)
    compute: list[int] = field(default_factory=list)  # positions in ``tiles`` to run the model on
    arrays: list[np.ndarray] = field(default_factory=list)
    stacked: Optional[torch.Tensor] = None
    probs: Optional[np.ndarray] = None

    @property
    def skipped(self) -> int:
        return len(self.tiles) - len(self.compute)


@dataclass
class Failure:
    """An error of the reader thread, raised by the model thread."""

    error: BaseException


def put(q: "queue.Queue[Any]", item: Any, stop: threading.Event) -> bool:
    """Put ``item`` in ``q``, waiting for room until ``stop`` is set (then False)."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.05)
            return True
        except queue.Full:
            continue
    return False


def stack(batch: Batch, pin: bool) -> None:
    """Stack the batch's inputs into one tensor (pinned for a copy to the GPU)."""
    if batch.arrays:
        stacked = torch.from_numpy(np.stack(batch.arrays))
        batch.stacked = stacked.pin_memory() if pin else stacked
        batch.arrays = []


def malloc_trim() -> Callable[[], None]:
    """glibc's ``malloc_trim(0)``, or a no-op elsewhere. Three threads churning through tile-sized
    arrays leave freed pages in glibc's arenas: on 64 MPix (null model) the peak grew 0.57-0.60 GiB
    above the base without trimming, 0.42-0.46 GiB when trimming every 8 batches."""
    name = ctypes.util.find_library("c")
    try:
        libc_trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        libc_trim = None

    def trim() -> None:
        if libc_trim is not None:
            libc_trim(0)

    return trim

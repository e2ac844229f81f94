"""Going on when the GPU runs out of memory: the work of one batch is done in chunks, and the
chunk size is halved at each out-of-memory error (then kept for the rest of the run), with a
warning naming the new size. Only a single item that does not fit is an error.

Mapping (:meth:`lovecs_core.mapping.pipeline.TileEngine.forward`), adaptation's training steps, AdaBN
statistics and pseudo-labelling all use :class:`ChunkedBatch`.
"""

from __future__ import annotations

import logging
from typing import Callable

import torch

log = logging.getLogger(__name__)


class OutOfGpuMemory(RuntimeError):
    """Even one item of a batch does not fit in the GPU's memory; the message says what to do."""


def free_gpu_memory() -> None:
    """Give the cached blocks of a failed allocation back (nothing to do on a CPU)."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class ChunkedBatch:
    """Runs the work of a batch of ``n`` items in chunks of at most :attr:`size` items.

    ``what`` names the items in messages (``"training windows"``), followed by ``unit``;
    ``single`` names one item in the error (default: "one of the ``what``"); ``advice`` is what
    to do when a single item does not fit. The size only ever shrinks, so a run pays for an
    out-of-memory error once."""

    def __init__(
        self, size: int, what: str, advice: str, unit: str = "at a time", single: str = ""
    ) -> None:
        self.size = max(1, int(size))
        self.what = what
        self.advice = advice
        self.unit = unit
        self.single = single or f"one of the {what}"
        self.halvings = 0

    def run(
        self,
        n: int,
        work: Callable[[slice, float], None],
        undo: Callable[[], None] = lambda: None,
        note: str = "",
    ) -> None:
        """Call ``work(items, share)`` for consecutive slices of ``range(n)`` (``share``: the
        slice's fraction of ``n``). On CUDA out-of-memory: ``undo()`` what the partial pass did,
        free the cache, halve the size (logged, with ``note``) and do the whole batch again."""
        while True:
            try:
                for start in range(0, n, self.size):
                    stop = min(n, start + self.size)
                    work(slice(start, stop), (stop - start) / n)
                return
            except torch.cuda.OutOfMemoryError:
                undo()
                free_gpu_memory()
                chunk = min(self.size, n)
                if chunk <= 1:
                    raise OutOfGpuMemory(
                        f"out of GPU memory even for {self.single}: {self.advice}"
                    ) from None
                self.size = max(1, chunk // 2)
                self.halvings += 1
                log.warning(
                    "out of GPU memory with %d %s: going on with %d%s",
                    chunk,
                    f"{self.what} {self.unit}".rstrip(),
                    self.size,
                    f" ({note})" if note else "",
                )

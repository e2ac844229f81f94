"""Mapping on a Ray cluster (``lovecs predict --ray [ADDRESS|auto]``), equal to one process.

The driver (the ``lovecs`` process) prepares the run exactly as :func:`~.predict.predict_raster`
does: bands, extent, sensor alignment, resampling to the model's GSD, outputs, style. Only the
engine differs (``predict_raster(make_engine=...)``): :class:`RayEngine` cuts the output into
blocks of whole 256 px GeoTIFF blocks (:mod:`.blockmap`) and hands them to Ray actors
(:class:`~.ray_worker.MapWorker`), each holding the model once on its CPU threads or its GPU. A worker maps
every tile that touches its block on the global tile grid and blends them with the one-process
arithmetic, so each block equals the same pixels of the one-process map bit for bit (given the
same intra-op thread count per model call: oneDNN's float32 sums change in the last bit with it).

**Output: the driver writes the one GeoTIFF itself, block by block as results arrive.** Workers
return class codes (1 byte per pixel; confidence and probabilities only when asked for) and the
driver's :class:`~.writer.PredictionWriter` puts each whole block into the file under its
temporary name. This keeps everything one process guarantees: one file with the same tiling,
compression, overviews, colour table and ``.qml``; a cancelled or failed run leaves only the
temporary name that the plugin sweeps up; no shared writable folder on the workers, no per-block
files to clean up after a lost worker, and no second pass to turn a VRT of block files into a
COG. The driver only compresses class codes, a small fraction of the model's time.

**Lost workers.** Actors restart (``max_restarts``) and Ray retries their pending blocks
(``max_task_retries``); a block whose worker is lost for good goes back to the queue for another
worker. A block is written once, when its whole result has arrived, so a lost block cannot leave
a partial one in the file. Cancel (the reporter's token) stops the actors at once and the
temporary outputs are removed as in one process.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from osgeo import gdal

from ...contract import MAPPING
from ...progress import Reporter
from ...rasters.reading import RasterReader
from ..blockmap import block_sides, block_windows
from ..pipeline import PieceSink, TileEngine
from ..predict import PredictResult, predict_raster
from ..tiling import make_grid
from .cluster import LOCAL, connected, describe
from .worker import BlockJob, BlockResult, MapWorker, WorkerSettings, portable_source

log = logging.getLogger(__name__)

#: Blocks queued on each worker: one computing, one waiting, so a worker never idles.
IN_FLIGHT = 2
#: Times Ray restarts a lost actor and retries its blocks.
RESTARTS = 2
#: Times a block lost with its worker is resubmitted to another worker.
RESUBMIT = 3
#: Seconds to wait for the workers to load the model.
START_TIMEOUT_S = 600.0
#: Name prefix of the actors (``ray list actors``; tests find them by it).
ACTOR_PREFIX = "lovecs-map"


@dataclass
class RayOptions:
    """How to run on the cluster. ``device``/``batch_size``/``amp``/``cpu_bf16`` apply on the
    workers (``auto``: a GPU per worker when the cluster has GPUs, else CPUs)."""

    address: Optional[str] = None  # None or "local": start one; "auto"; "host:port"
    workers: Optional[int] = None  # default: one per GPU, or one per cpus_per_worker CPUs
    cpus_per_worker: int = 1
    block: Optional[int] = None  # square blocks of this side (a multiple of 256); default:
    # block_sides()
    device: str = "auto"
    batch_size: Optional[int] = None
    amp: bool = True
    cpu_bf16: bool = False
    restarts: int = RESTARTS


@dataclass
class RunStats:
    """What a distributed run did (the ``cluster`` entry of the result)."""

    workers: int = 0
    device: str = ""
    blocks: int = 0
    block_size: str = ""
    tiles_computed: int = 0
    resubmitted: int = 0
    processes: set[int] = field(default_factory=set)

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["processes"] = len(self.processes)
        return d


def _lost_worker_errors(ray: Any) -> tuple[type[BaseException], ...]:
    e = ray.exceptions
    return (
        e.RayActorError,
        e.WorkerCrashedError,
        e.NodeDiedError,
        e.ObjectLostError,
        e.OutOfMemoryError,
    )


class RayEngine(TileEngine):
    """A :class:`~.pipeline.TileEngine` whose :meth:`run` maps blocks on Ray actors."""

    def __init__(self, local: TileEngine, base: gdal.Dataset, options: RayOptions, ray: Any):
        super().__init__(
            local.card,
            local.net,
            torch.device("cpu"),
            local.domain,
            local.mean,
            local.std,
            local.tile,
            local.overlap,
            local.batch_size,
            False,
            local.reporter,
        )
        self.transform = local.transform
        self.ray, self.options, self.base = ray, options, base
        self.stats = RunStats()
        self.actors: list[Any] = []
        self._run_id = os.urandom(4).hex()
        self._local = local

    def start(self) -> None:
        """Start the workers and wait until each has loaded the model."""
        ray, o, local = self.ray, self.options, self._local
        resources = ray.available_resources()
        gpus = int(resources.get("GPU", 0))
        use_gpu = o.device != "cpu" and gpus > 0
        if o.device.startswith("cuda") and not use_gpu:
            raise RuntimeError(f"--device {o.device}: the Ray cluster has no free GPU")
        cpus = max(1, o.cpus_per_worker)
        n = o.workers or (gpus if use_gpu else max(1, int(resources.get("CPU", 1)) // cpus))
        settings = WorkerSettings(
            "cuda" if use_gpu else "cpu",
            cpus,
            local.domain,
            tuple(local.mean),
            tuple(local.std),
            local.tile,
            local.overlap,
            o.batch_size,
            o.amp,
            o.cpu_bf16,
            local.transform,
        )
        net = self.net
        if any(t.device.type != "cpu" for t in (*net.parameters(), *net.buffers())):
            net = copy.deepcopy(net).cpu()  # workers without a GPU must be able to unpack it
        # Ray's own serialiser carries the module from this process to the workers (no file is
        # read there, so nothing to torch.load); kept: a restarted actor unpacks it again
        self._model = ray.put((self.card, net))
        remote = ray.remote(MapWorker)
        self.actors = [
            remote.options(
                name=f"{ACTOR_PREFIX}-{self._run_id}-{i}",
                num_cpus=cpus,
                num_gpus=1 if use_gpu else 0,
                max_restarts=o.restarts,
                max_task_retries=o.restarts,
            ).remote(self._model, settings)
            for i in range(n)
        ]
        infos = self._wait([a.info.remote() for a in self.actors], "load the model")
        precisions = {i["precision"] for i in infos}
        if len(precisions) > 1:  # a mixed cluster: every worker in float32, the maps agree
            log.warning("workers differ in precision (%s): float32 everywhere", precisions)
            self.close()
            self.options.cpu_bf16 = self.options.amp = False
            return self.start()
        self.precision = precisions.pop()
        self.stats.workers, self.stats.device = n, settings.device
        log.info(
            "%d Ray worker(s) on %s, %s, %d thread(s) each",
            n,
            settings.device,
            self.precision,
            cpus,
        )

    def _wait(self, refs: list[Any], what: str) -> list[Any]:
        deadline = time.monotonic() + START_TIMEOUT_S
        pending = list(refs)
        while pending:
            _, pending = self.ray.wait(pending, num_returns=len(pending), timeout=0.2)
            self.reporter.check()
            if pending and time.monotonic() > deadline:
                raise TimeoutError(
                    f"{len(pending)} of {len(refs)} Ray workers did not {what} within "
                    f"{START_TIMEOUT_S:.0f} s (is the cluster short of CPUs or GPUs?)"
                )
        return [self._get(r) for r in refs]

    def _get(self, ref: Any) -> Any:
        """A task's result; an error raised by the engine in the worker is raised as itself."""
        try:
            return self.ray.get(ref)
        except self.ray.exceptions.RayTaskError as exc:
            cause = exc.cause if isinstance(exc.cause, BaseException) else None
            if cause is None:
                raise
            raise cause from None

    def run(self, reader: RasterReader, sink: Any) -> tuple[int, int]:
        """Map every block of ``reader`` on the workers; ``sink`` (a :class:`PieceSink`) gives
        the writer. Returns ``(tiles_total, tiles_skipped)`` of the grid, as one process."""
        if not isinstance(sink, PieceSink):
            raise TypeError("RayEngine.run writes through a PieceSink (pipeline.PieceSink)")
        grid = make_grid(reader.width, reader.height, self.tile, self.overlap)
        bw, bh = (
            (self.options.block,) * 2 if self.options.block else block_sides(grid, len(self.actors))
        )
        blocks = block_windows(reader.width, reader.height, bw, bh)
        source = portable_source(reader.ds, self.base)
        jobs = [
            BlockJob(source, tuple(reader.bands), b, sink.confidence_dtype, sink.probabilities)
            for b in blocks
        ]
        self.stats.blocks, self.stats.block_size = len(blocks), f"{bw}x{bh}"
        total_px = reader.width * reader.height
        queue, tries = deque(range(len(jobs))), [0] * len(jobs)
        pending: dict[Any, tuple[int, int]] = {}  # ref -> (job, actor)
        load = [0] * len(self.actors)
        dead: set[int] = set()
        failures = [0] * len(self.actors)
        lost = _lost_worker_errors(self.ray)
        died = self.ray.exceptions.ActorDiedError
        skipped: set[tuple[int, int]] = set()
        done = done_px = 0
        self.reporter(MAPPING, 0.0, f"0/{len(jobs)} blocks of {bw}x{bh} px")
        while queue or pending:
            for a in range(len(self.actors)):
                while a not in dead and load[a] < IN_FLIGHT and queue:
                    j = queue.popleft()
                    pending[self.actors[a].map.remote(jobs[j])] = (j, a)
                    load[a] += 1
            if not pending:
                raise RuntimeError("every Ray worker was lost; the map is incomplete")
            ready, _ = self.ray.wait(list(pending), num_returns=1, timeout=0.1)
            self.reporter.check()
            for ref in ready:
                j, a = pending.pop(ref)
                load[a] -= 1
                try:
                    res: BlockResult = self._get(ref)
                except lost as exc:
                    failures[a] += 1
                    if failures[a] > self.options.restarts or isinstance(exc, died):
                        dead.add(a)  # gone for good: its blocks go to the others
                    tries[j] += 1
                    if tries[j] > RESUBMIT:
                        raise RuntimeError(
                            f"block {blocks[j]} failed {tries[j]} times: its Ray workers "
                            f"were lost ({type(exc).__name__}: {exc})"
                        ) from None
                    log.warning(
                        "block %s: worker lost (%s); resubmitted", blocks[j], type(exc).__name__
                    )
                    self.stats.resubmitted += 1
                    queue.appendleft(j)
                    continue
                if res.precision != self.precision:
                    raise RuntimeError(
                        f"a restarted Ray worker computed in {res.precision}, the others in "
                        f"{self.precision} (a mixed cluster); rerun with --no-amp"
                    )
                b = res.block
                sink.writer.write(
                    b.yoff, res.classes, res.confidence, res.probabilities, col_off=b.xoff
                )
                skipped.update(res.skipped)
                self.stats.tiles_computed += res.computed
                self.stats.processes.add(res.pid)
                done, done_px = done + 1, done_px + b.xsize * b.ysize
                self.reporter(
                    MAPPING,
                    done_px / total_px,
                    f"{done}/{len(jobs)} blocks",
                    worker=a,
                    workers=len(self.actors) - len(dead),
                    processes=len(self.stats.processes),
                )
        computed = self.stats.tiles_computed
        log.info(
            "%d blocks of %s px on %d workers: %d tile runs for %d tiles (%.2fx, tiles across "
            "block edges run for each block), %d blocks resubmitted",
            len(jobs),
            self.stats.block_size,
            len(self.actors),
            computed,
            len(grid) - len(skipped),
            computed / max(1, len(grid) - len(skipped)),
            self.stats.resubmitted,
        )
        return len(grid), len(skipped)

    def close(self) -> None:
        """Stop the workers (at the end of a run, and at once on cancel or error)."""
        for actor in self.actors:
            with contextlib.suppress(Exception):
                self.ray.kill(actor, no_restart=True)
        self.actors = []


def predict_raster_ray(
    model: Any,
    raster: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    ray_options: Optional[RayOptions] = None,
    reporter: Optional[Reporter] = None,
    **kwargs: Any,
) -> PredictResult:
    """:func:`~.predict.predict_raster` on a Ray cluster (same arguments; ``device``,
    ``batch_size``, ``amp`` and ``cpu_bf16`` apply on the workers). The result's ``cluster``
    entry says what the cluster did. The map equals one process's pixel for pixel."""
    o = ray_options or RayOptions()
    for key in ("device", "batch_size", "amp", "cpu_bf16"):
        if key in kwargs:
            setattr(o, key, kwargs.pop(key))
    text = str(raster)
    if os.path.exists(text):  # workers may run in another folder
        raster = os.path.abspath(text)
    engines: list[RayEngine] = []
    num_cpus = o.workers * o.cpus_per_worker if o.workers else None
    with connected(o.address, num_cpus) as ray:
        log.info("mapping on %s", describe(o.address or LOCAL))

        def make(local: TileEngine, ds: gdal.Dataset) -> TileEngine:
            engines.append(RayEngine(local, ds, o, ray))
            engines[-1].start()  # in the list first: close() stops what started
            return engines[-1]

        try:
            result = predict_raster(
                model, raster, out, device="cpu", reporter=reporter, make_engine=make, **kwargs
            )
        finally:
            for engine in engines:
                engine.close()
    stats = engines[0].stats
    result.device = f"ray: {stats.workers} worker(s) on {stats.device}"
    result.cluster = stats.to_dict()
    return result

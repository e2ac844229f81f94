"""Checks made before any long work starts, so that a run that cannot succeed fails in a second
with a message naming the problem, never after an hour of training or with a file lost.

Torch-free (GDAL and the standard library only): the QGIS plugin calls the same functions in
its own process, so the command line and Processing say the same thing.

- :func:`check_outputs`: THE rule every command and Processing algorithm applies to its outputs:
  no output is any input or another output, each is a regular file or a new name (never a
  folder or a device), its name leaves room for the hidden temporary names written beside it,
  its folder is writable and the disk holds them all. Leftovers of a killed run are removed.
- :func:`check_adapt_outputs`, :func:`check_predict_outputs`, :func:`check_train_outputs`:
  the rule for the outputs of those commands (a checkpoint included).
Adaptation settings in range are checked in :mod:`.settings`; the checks of an input raster
(georeference, values, bands, size) are in :mod:`.rasters`.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from ..contract import (
    PART,
    PROBE_PREFIX,
    TEMPORARY_TAGS,
    checkpoint_path,
    part_path,
    partial_files,
    points_folder,
    rejected_path,
)
from .quiet import open_quietly

log = logging.getLogger(__name__)

__all__ = [
    "MIN_FREE_BYTES",
    "CheckError",
    "check_adapt_outputs",
    "check_free_space",
    "check_output_path",
    "check_outputs",
    "check_predict_outputs",
    "check_train_outputs",
    "remove_leftovers",
    "same_path",
]

#: Below this much free space in an output folder a run is refused up front ("disk full").
MIN_FREE_BYTES = 16 * 1024**2


class CheckError(ValueError):
    """A run cannot start as asked; the message says what is wrong and what to do."""


PathArg = str | os.PathLike[str]


def same_path(a: Optional[PathArg], b: Optional[PathArg]) -> bool:
    """Whether two paths name the same file (also through links and ``..``)."""
    if a is None or b is None or str(a) == "" or str(b) == "":
        return False
    pa, pb = Path(a), Path(b)
    try:
        if pa.exists() and pb.exists():
            return os.path.samefile(pa, pb)
    except OSError:
        pass
    return pa.resolve() == pb.resolve()


def _existing_folder(path: Path) -> Path:
    """The nearest folder above ``path`` that exists."""
    folder = path.absolute().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def _mb(n: float) -> str:
    return f"{n / 1024**2:.1f} MB"


def check_free_space(folder: PathArg, needed: int = 0, what: str = "the output") -> None:
    """Refuse when ``folder`` has less than ``max(needed, MIN_FREE_BYTES)`` bytes free."""
    folder = Path(folder)
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return  # cannot tell; the writer reports a full disk if it happens
    want = max(int(needed), MIN_FREE_BYTES)
    if free < want:
        raise CheckError(
            f"disk full: {folder} has {_mb(free)} free, and about {_mb(want)} is needed for "
            f"{what}; free some space or write to another disk"
        )


def check_output_path(
    path: PathArg, what: str = "output", needed: int = 0, space: bool = True
) -> Path:
    """One output file can be created: a regular file or a new name (not a folder, a device, a
    pipe), a name short enough for its temporary names, its folder writable (probed with a real
    file, as permissions alone do not show read-only mounts), and (``space``) the disk not full.
    Returns the absolute path."""
    p = Path(path).absolute()
    if not p.name:
        raise CheckError(f"the {what} path is empty")
    if p.is_dir():
        raise CheckError(
            f"the {what} {p} is an existing folder; give a file name, e.g. {p / 'result.tif'}"
        )
    if p.exists() and not p.is_file():
        raise CheckError(
            f"the {what} {p} is not a regular file (a device, pipe or socket): outputs must be "
            "regular files or new names; choose another file name"
        )
    folder = _existing_folder(p)
    if not folder.is_dir():
        raise CheckError(f"cannot write the {what} {p}: {folder} is a file, not a folder")
    if folder != p.parent and not os.access(folder, os.W_OK | os.X_OK):
        raise CheckError(
            f"cannot write the {what} {p}: its folder {p.parent} does not exist "
            f"and cannot be created in {folder}"
        )
    _check_name_length(p, what, folder)
    _probe(folder, p, what)
    if space:
        check_free_space(folder, needed, f"the {what}")
    return p


def _probe(folder: Path, p: Path, what: str) -> None:
    """Create and delete a file in ``folder``: writable, and not full."""
    try:
        fd, probe = tempfile.mkstemp(prefix=PROBE_PREFIX, dir=folder)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise CheckError(
                f"disk full: cannot write the {what} in {folder}; free some space "
                f"or write to another disk"
            ) from None
        raise CheckError(
            f"cannot write the {what} {p}: the folder {folder} is not writable "
            f"({exc.strerror or exc}); choose another folder"
        ) from None
    os.close(fd)
    os.unlink(probe)


def _longest_temporary_name(p: Path) -> int:
    """Bytes of the longest name written beside ``p`` while it is made (its nested temporary
    rasters and their sidecars, its ``.part``, checkpoint, rejected twin and style)."""
    token = "0" * 8
    longest_tag = max(TEMPORARY_TAGS, key=len)
    names = [
        p.name,
        f"..{p.stem}.{longest_tag}-{token}.{PART}-{token}.tif.aux.xml",
        part_path(checkpoint_path(p)).name,
        part_path(rejected_path(p)).name,
        part_path(p.with_suffix(".qml")).name,
    ]
    return max(len(os.fsencode(n)) for n in names)


def _check_name_length(p: Path, what: str, folder: Path) -> None:
    try:
        limit = os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        limit = 255
    longest = _longest_temporary_name(p)
    if longest > limit:
        raise CheckError(
            f"the {what} name {p.name[:40]}... is {len(os.fsencode(p.name))} bytes long: the "
            f"temporary files written beside it need {longest}, more than the {limit} bytes a "
            "file name may have here; choose a shorter name"
        )


#: An output: ``(what, path)`` or ``(what, path, bytes it needs on disk)``; no path: not asked.
OutputSpec = tuple[str, Optional[PathArg]] | tuple[str, Optional[PathArg], int]


def check_outputs(
    outputs: Sequence[OutputSpec], inputs: Sequence[tuple[str, Optional[PathArg]]] = ()
) -> list[Path]:
    """The one no-overwrite rule of every command and Processing algorithm: no output is any
    of the ``inputs`` or another output; each is a regular file or a new name (never a folder
    or a device) that :func:`check_output_path` accepts; the disk of each folder holds all the
    outputs written there (their ``bytes`` summed). Then the hidden leftovers of an earlier,
    killed run writing these outputs are removed. Returns the absolute paths. Raises
    :class:`CheckError`."""
    given = [(o[0], o[1], int(o[2]) if len(o) > 2 else 0) for o in outputs if o[1]]
    _distinct([(name, path) for name, path, _ in given], inputs)
    paths = [check_output_path(path, name, space=False) for name, path, _ in given]
    by_disk: dict[Any, tuple[Path, int, list[str]]] = {}
    for p, (name, _, needed) in zip(paths, given):
        folder = _existing_folder(p)
        try:
            disk: Any = folder.stat().st_dev
        except OSError:
            disk = folder
        first, total, names = by_disk.get(disk, (folder, 0, []))
        by_disk[disk] = (first, total + needed, [*names, name])
    for folder, total, names in by_disk.values():
        check_free_space(folder, total, " and ".join(f"the {n}" for n in names))
    for p in paths:
        remove_leftovers(p)
    return paths


#: A probe file older than this (seconds) was left by a killed check, not made by one running.
STALE_PROBE_S = 60.0


def remove_leftovers(output: Path) -> list[Path]:
    """Remove the hidden temporary files an earlier run writing ``output`` left when it was
    killed (``kill -9``, out of memory), the folder of an ``adapt --points`` run, and stale
    probes of the early checks; a checkpoint stays (``--resume`` continues it). Returns what
    was removed."""
    removed: list[Path] = []
    keep = checkpoint_path(output)
    style = part_path(output.with_suffix(".qml"))
    for leftover in [*partial_files(output), *([style] if style.is_file() else [])]:
        if leftover != keep and _unlink(leftover):
            removed.append(leftover)
    points = points_folder(output)
    if points.is_dir():
        shutil.rmtree(points, ignore_errors=True)
        removed.append(points)
    folder = output.parent
    if folder.is_dir():
        now = time.time()
        for probe in folder.glob(PROBE_PREFIX + "*"):
            try:
                stale = now - probe.stat().st_mtime > STALE_PROBE_S
            except OSError:
                continue
            if stale and probe.is_file() and _unlink(probe):
                removed.append(probe)
    if removed:
        log.info("removed %d file(s) left by an earlier, interrupted run", len(removed))
    return removed


def _unlink(path: Path) -> bool:
    try:
        path.unlink()
    except OSError:
        return False
    return True


def _distinct(
    named: Sequence[tuple[str, Optional[PathArg]]], inputs: Sequence[tuple[str, Optional[PathArg]]]
) -> None:
    for i, (name, path) in enumerate(named):
        if not path:
            continue
        for in_name, in_path in inputs:
            if same_path(path, in_path):
                raise CheckError(
                    f"the {name} would overwrite the {in_name} {in_path}; "
                    f"choose another file name for the {name}"
                )
        for other_name, other in named[i + 1 :]:
            if same_path(path, other):
                raise CheckError(
                    f"the {name} and the {other_name} are the same file {path}; "
                    f"give them different names"
                )


def _raster_size(path: Optional[PathArg]) -> int:
    """Pixels of a raster (0 when it cannot be opened here)."""
    if not path:
        return 0
    ds = open_quietly(path)
    return 0 if ds is None else ds.RasterXSize * ds.RasterYSize


def _file_size(path: Optional[PathArg]) -> int:
    return Path(path).stat().st_size if path and Path(path).is_file() else 0


#: A checkpoint holds the weights and the optimiser's momentum (about twice the model file), and
#: the previous one stays until the next is complete: four model files in all.
CHECKPOINT_MODEL_FILES = 4


def check_adapt_outputs(
    model: PathArg,
    target: PathArg,
    out: PathArg,
    map_path: Optional[PathArg] = None,
    confidence_path: Optional[PathArg] = None,
    checkpoint: bool = True,
) -> None:
    """Before adapting: the adapted model file (and its rejected twin), the checkpoint
    (``checkpoint``: a method that self-trains), the map and the confidence differ from the
    source model, the target scene and each other, each can be written, and the disk holds
    them together. Raises :class:`CheckError`."""
    if not out:
        raise CheckError("no file name for the adapted model")
    if confidence_path and not map_path:
        raise CheckError("a confidence file needs a map file too")
    model_size = _file_size(model)
    # a compressed class map takes well under a byte per pixel; ask for a quarter
    pixels = _raster_size(target) if map_path else 0
    ckpt = checkpoint_path(Path(out)) if checkpoint else None
    check_outputs(
        [
            ("adapted model", out, 2 * model_size),
            ("checkpoint", ckpt, CHECKPOINT_MODEL_FILES * model_size),
            ("map", map_path, pixels // 4),
            ("confidence", confidence_path, pixels // 4),
        ],
        [("source model", model), ("target scene", target)],
    )


def check_predict_outputs(
    raster: PathArg,
    out: PathArg,
    confidence: Optional[PathArg] = None,
    probabilities: Optional[PathArg] = None,
) -> None:
    """Before classifying: outputs differ from the input and from each other and can be
    written. Raises :class:`CheckError`."""
    check_outputs(
        [("map", out), ("confidence", confidence), ("probabilities", probabilities)],
        [("input raster", raster)],
    )


def check_train_outputs(
    out: PathArg, inputs: Sequence[tuple[str, Optional[PathArg]]], checkpoint: bool
) -> None:
    """Before training: the model file (and with ``checkpoint`` its checkpoint) is none of the
    ``inputs`` (images, labels, classes) and can be written. Raises :class:`CheckError`."""
    ckpt = checkpoint_path(Path(out)) if checkpoint else None
    check_outputs([("model", out), ("checkpoint", ckpt)], inputs)

"""Output files that go wrong: a readable error for a failed write ("disk full", a folder in the
way, permissions), and removing a raster with its GDAL sidecars."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path
from typing import Optional


def sidecars(path: Path) -> list[Path]:
    return [path, Path(str(path) + ".aux.xml"), Path(str(path) + ".ovr")]


def remove_raster(path: Path) -> None:
    """Delete a GeoTIFF and its GDAL sidecars, if present (never raises: this runs while
    cleaning up after another error)."""
    for p in sidecars(path):
        try:
            p.unlink(missing_ok=True)
        except OSError:
            pass


class OutputError(OSError):
    """An output could not be written; the message says why (``disk full``, a folder ...)."""


#: Free space below which a failed write is reported as a full disk.
DISK_FULL_BYTES = 1024**2
_DISK_FULL_TEXT = ("no space left", "disk full", "free disk space", "not enough space")


def write_error(exc: BaseException, path: Path, final: Optional[Path] = None) -> BaseException:
    """A readable :class:`OutputError` for a failed write of ``path`` (the temporary file of
    ``final``): "disk full" when the disk is (nearly) full or the error says so."""
    if isinstance(exc, OutputError):
        return exc
    final = final or path
    text = str(exc)
    errno_ = getattr(exc, "errno", None)
    try:
        free: Optional[int] = shutil.disk_usage(path.parent).free
    except OSError:
        free = None
    if (
        errno_ == errno.ENOSPC
        or any(t in text.lower() for t in _DISK_FULL_TEXT)
        or (free is not None and free < DISK_FULL_BYTES)
    ):
        where = (
            f"{free / 1024**2:.1f} MB free in {path.parent}"
            if free is not None
            else str(path.parent)
        )
        return OutputError(
            errno.ENOSPC,
            f"disk full: cannot write {final} ({where}); free some space or write to another disk",
        )
    if errno_ in (errno.EISDIR, errno.ENOTEMPTY) or final.is_dir():
        return OutputError(
            errno.EISDIR, f"cannot write {final}: it is an existing folder; give a file name"
        )
    if errno_ in (errno.EACCES, errno.EPERM, errno.EROFS):
        return OutputError(errno_, f"cannot write {final}: permission denied ({text})")
    return OutputError(errno_ or errno.EIO, f"cannot write {final}: {text}")

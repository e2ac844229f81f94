"""The ``lovecs`` command line: ``info``, ``predict``, ``train``, ``adapt``, ``evaluate``, ``devices``.

Progress goes to a tqdm bar on a terminal, or as JSON lines on stdout with ``--progress json``
(what the QGIS plugin runner reads). Errors exit non-zero with a one-line message.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Any, Callable, Optional, Sequence

from ..contract import CANCELLED, ERROR
from ..progress import (
    Cancelled,
    CancelToken,
    JsonLinesSink,
    ProgressCallback,
    ProgressEvent,
    emit_json,
)

COMMANDS = ["info", "predict", "train", "adapt", "refine", "evaluate", "devices", "session"]
EXIT_ERROR = 1
EXIT_CANCELLED = 130


class TqdmProgress:
    """One tqdm bar per stage, on stderr."""

    def __init__(self) -> None:
        self._bar: Any = None  # a tqdm bar, imported on first use
        self._stage = ""

    def __call__(self, event: ProgressEvent) -> None:
        from tqdm import tqdm

        if event.stage != self._stage or self._bar is None:
            self.close()
            self._stage = event.stage
            self._bar = tqdm(
                total=100,
                desc=event.stage,
                unit="%",
                leave=True,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}] {postfix}",
                file=sys.stderr,
            )
        self._bar.n = round(event.fraction * 100, 1)
        if event.message:
            self._bar.set_postfix_str(event.message, refresh=False)
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lovecs", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--progress",
        choices=("auto", "bar", "json", "none"),
        default="auto",
        help="progress display: a bar on a terminal, JSON lines for programs",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="more log output")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        module = importlib.import_module(f".{name}", __package__)
        module.register(sub)
    return parser


def _progress_sink(mode: str) -> tuple[Optional[ProgressCallback], Callable[[], None]]:
    if mode == "auto":
        mode = "bar" if sys.stderr.isatty() else "none"
    if mode == "json":
        return JsonLinesSink(sys.stdout), lambda: None
    if mode == "bar":
        bar = TqdmProgress()
        return bar, bar.close
    return None, lambda: None


def _cancel_on_sigterm(cancel: CancelToken) -> Callable[[], None]:
    """SIGTERM (what the QGIS plugin's runner sends to cancel) sets the cancel token, so the
    engine stops at its next progress report and removes partial outputs; a second SIGTERM
    interrupts at once. Returns a function restoring the previous handler."""
    import signal

    def handler(signum: int, frame: object) -> None:
        if cancel.cancelled:
            raise KeyboardInterrupt
        cancel.cancel()

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # main() called outside the main thread: keep the default
        return lambda: None

    def restore() -> None:
        signal.signal(signal.SIGTERM, previous)

    return restore


def _private_torch_cache() -> None:
    """torch creates ``$TMPDIR/torchinductor_USER`` when the optimiser first imports its
    compiler, and leaves it; this run's goes to a folder of its own, removed at exit (unless
    the user chose one with ``TORCHINDUCTOR_CACHE_DIR``)."""
    import atexit
    import os
    import shutil
    import tempfile

    if "TORCHINDUCTOR_CACHE_DIR" in os.environ:
        return
    folder = tempfile.mkdtemp(prefix="lovecs-torch-")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = folder
    atexit.register(shutil.rmtree, folder, True)


def main(argv: Optional[Sequence[str]] = None) -> int:
    _private_torch_cache()
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    callback, close = _progress_sink(args.progress)
    json_mode = args.progress == "json"
    from ..progress import CancelToken, Reporter

    cancel = CancelToken()
    restore_sigterm = _cancel_on_sigterm(cancel)
    reporter = Reporter(callback, cancel)
    try:
        return int(args.handler(args, reporter) or 0)
    except (Cancelled, KeyboardInterrupt) as exc:
        close()
        if json_mode:
            emit_json(sys.stdout, CANCELLED)
        print(
            f"lovecs: {'cancelled' if isinstance(exc, Cancelled) else 'interrupted'}",
            file=sys.stderr,
        )
        return EXIT_CANCELLED
    except Exception as exc:  # every engine error ends here with a readable line
        close()
        if args.verbose:
            logging.exception("failed")
        if json_mode:  # the program reading the JSON shows the message: say it once
            emit_json(sys.stdout, ERROR, message=str(exc), exception=type(exc).__name__)
        else:
            print(f"lovecs {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        close()
        restore_sigterm()


if __name__ == "__main__":
    sys.exit(main())

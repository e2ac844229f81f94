"""``torchrun --nproc_per_node N -m lovecs_core adapt ...``: the entry point of each rank
(:mod:`lovecs_core.parallel.distributed` holds the process group)."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, Sequence

from ..parallel.distributed import finish, launched_world, start
from .main import EXIT_ERROR, build_parser
from .main import main as cli_main


def main(argv: Sequence[str]) -> int:
    """``python -m lovecs_core`` under torchrun: ``adapt`` only; rank 0 alone prints and reports
    progress."""
    args = build_parser().parse_args(list(argv))
    rank = int(os.environ["RANK"])
    if args.command != "adapt":
        if rank == 0:
            print(
                f"lovecs {args.command}: error: only 'adapt' runs under torchrun "
                f"(WORLD_SIZE={launched_world()}); run other commands as one process",
                file=sys.stderr,
            )
        return EXIT_ERROR
    argv = list(argv)
    if rank != 0:  # errors only, marked with the rank; no progress
        sys.stderr = _RankPrefix(sys.stderr, f"[rank {rank}] ")
        verbose = ["-v"] if args.verbose else []
        argv = ["--progress", "none", *verbose, *argv[argv.index("adapt") :]]
    logging.basicConfig(
        level=(logging.DEBUG if args.verbose else logging.INFO) if rank == 0 else logging.ERROR,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        start(args.device)
    except Exception as exc:
        print(
            f"lovecs adapt [rank {rank}]: error: cannot join the process group: {exc}",
            file=sys.stderr,
        )
        return EXIT_ERROR
    try:
        return cli_main(argv)
    finally:
        finish()


class _RankPrefix:
    """A text stream that starts every line with ``prefix``."""

    def __init__(self, stream: Any, prefix: str) -> None:
        self.stream, self.prefix, self._line_start = stream, prefix, True

    def write(self, text: str) -> int:
        parts = []
        for line in text.splitlines(keepends=True):
            parts.append(self.prefix + line if self._line_start else line)
            self._line_start = line.endswith("\n")
        self.stream.write("".join(parts))
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)

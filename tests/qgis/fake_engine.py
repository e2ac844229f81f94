"""A stand-in for ``python -m lovecs_core --progress json COMMAND ...`` in dock tests: it speaks the
engine's JSON lines and writes outputs by copying its inputs, in seconds. The first argument is
the behaviour (``LOVECS_FAKE`` names it in the environment-free tests: argv[1]); the rest are the
arguments the dock gave the engine.

    python fake_engine.py ok|slow-start|long|fail predict --model m --raster r --out o ...
"""

from __future__ import annotations

import json
import shutil
import sys
import time


def say(kind: str, **payload: object) -> None:
    print(json.dumps({"type": kind, **payload}), flush=True)


def option(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1] if flag in args else ""


def deliver(command: str, args: list[str]) -> None:
    if command == "adapt":
        shutil.copy(option(args, "--model"), option(args, "--out"))
        shutil.copy(option(args, "--target"), option(args, "--map"))
        say("result", map=option(args, "--map"), model=option(args, "--out"))
    else:
        shutil.copy(option(args, "--raster"), option(args, "--out"))
        say("result", map=option(args, "--out"))


def main() -> int:
    behaviour, command, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    if behaviour == "slow-start":
        time.sleep(2.0)  # PyTorch and the model loading
    if behaviour == "fail":
        message = "'scene.tif' has 3 band(s); band(s) [9] do not exist"
        print(f"ERROR lovecs_core.cli.main: {message}", file=sys.stderr, flush=True)
        say("error", message=message)
        return 2
    print("INFO lovecs_core.mapping.predict: sensor alignment: none needed", file=sys.stderr)
    for i in range(6):
        say("progress", stage="mapping", fraction=i / 10, message=f"{i}/10 tiles")
        time.sleep(0.05)
    if behaviour == "long":
        time.sleep(120)  # until cancelled
    say("progress", stage="mapping", fraction=1.0, message="10/10 tiles")
    deliver(command, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

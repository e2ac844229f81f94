#!/usr/bin/env python3
"""One prepared run that proves the engine's GPU path (issue 25): ``make gpu-check``.

Runs each part in its own process with a time cap (a part that fails or runs over is recorded
and the others go on) and writes ``report.json`` and ``report.md`` under ``--out``:

    env            device, driver, versions
    cuda_tests     the tests marked ``cuda`` (mixed precision, real out-of-memory halving, ...)
    mapping_default, mapping_r50
                   throughput of the bundled model and of an FPN-ResNet-50 on a synthetic raster
                   (8192 px square on CUDA): model alone per precision, and end to end
                   (read, align, model, blend, write) with and without mixed precision
    adapt_fast     ``lovecs adapt --preset fast`` on target_b: time, mIoU, the health verdict
    torchrun       adaptation under torchrun, 1 rank, in a process group (NCCL on CUDA, gloo on a CPU)
    ray            a local Ray cluster with one worker against one process (same map)
    compile        ``torch.compile`` on and off (model alone; end to end for the bundled model)
    adapt_paper    ``lovecs adapt --preset paper`` on target_b, with what is left of the budget

    python bench/gpu_check.py --device cuda                 # <= 8 minutes on an H200
    python bench/gpu_check.py --device cpu                  # the rehearsal: tiny sizes, ~1 minute
    python bench/gpu_check.py --device cuda --parts adapt_paper --budget-s 540
    python bench/gpu_check.py --record /work/.device/.../report.json    # into bench/RESULTS.md

See docs/gpu.md for the device call and how to record the report in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "bench" / "out" / "gpu-check"
#: seconds kept back from the budget for writing the report
RESERVE_S = 5.0
#: a part is not started with less than this left
MIN_PART_S = 10.0


@dataclass(frozen=True)
class Part:
    """One guarded step: its name, what it shows, and its time caps on CUDA and on a CPU."""

    name: str
    what: str
    cap_cuda: float
    cap_cpu: float


PARTS: tuple[Part, ...] = (
    # caps on a CPU: hangs stopped, a loaded CI machine let through (quiet: ~70 s in all)
    Part("env", "device, driver and versions", 30, 60),
    Part("cuda_tests", "tests marked cuda (pytest -m cuda)", 90, 60),
    Part("mapping_default", "bundled model: model alone and end to end", 70, 90),
    Part("mapping_r50", "FPN-ResNet-50: model alone and end to end", 80, 90),
    Part("adapt_fast", "lovecs adapt --preset fast on target_b", 100, 150),
    Part("torchrun", "adaptation under torchrun, 1 rank in a process group", 60, 90),
    Part("ray", "local Ray cluster, one worker, against one process", 60, 90),
    Part("compile", "torch.compile on and off", 120, 90),
    Part("adapt_paper", "lovecs adapt --preset paper on target_b (what is left)", 240, 20),
)
NAMES = tuple(p.name for p in PARTS)


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", help="cuda (the check) or cpu (the rehearsal)")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="report folder")
    p.add_argument("--budget-s", type=float, help="whole run (default 450 on CUDA, 500 on a CPU)")
    p.add_argument("--size", type=int, help="synthetic raster side (default 8192 CUDA, 256 CPU)")
    p.add_argument("--tile", type=int, help="tile side (default the model's; 256 on a CPU)")
    p.add_argument("--batch-size", type=int, help="tiles per batch (default the engine's)")
    p.add_argument("--data", help="shared data with target_b/ (default env LOVECS_SHARED_DATA)")
    p.add_argument("--paper-iterations", type=int,
                   help="adapt_paper: this many iterations (refresh every 2/5 of them) instead "
                   "of the preset's 5000, to see it finish inside a short budget")  # fmt: skip
    p.add_argument("--parts", help=f"comma-separated subset of {','.join(NAMES)}")
    p.add_argument("--skip", default="", help="comma-separated parts to skip (recorded)")
    p.add_argument("--record", metavar="REPORT_JSON", help="put a report into bench/RESULTS.md")
    p.add_argument("--part", choices=NAMES, help=argparse.SUPPRESS)  # child mode
    p.add_argument("--part-file", help=argparse.SUPPRESS)
    p.add_argument("--cap-s", type=float, default=0.0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    cuda = args.device.startswith("cuda")
    args.budget_s = args.budget_s or (450.0 if cuda else 500.0)
    args.size = args.size or (8192 if cuda else 256)
    args.tile = args.tile or (None if cuda else 256)
    default_data = ROOT.parent / "shared" / "data"
    args.data = args.data or os.environ.get("LOVECS_SHARED_DATA") or str(default_data)
    return args


def child_command(args: argparse.Namespace, part: str, part_file: Path, cap: float) -> list[str]:
    """The command that runs one part in its own process."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--part", part, "--part-file"]
    cmd += [str(part_file), "--cap-s", f"{cap:.0f}", "--device", args.device, "--out", args.out]
    cmd += ["--size", str(args.size), "--data", args.data, "--budget-s", str(args.budget_s)]
    if args.tile:
        cmd += ["--tile", str(args.tile)]
    if args.batch_size:
        cmd += ["--batch-size", str(args.batch_size)]
    if args.paper_iterations:
        cmd += ["--paper-iterations", str(args.paper_iterations)]
    return cmd


def run_guarded(cmd: list[str], cap: float, log: Path) -> tuple[Optional[int], float]:
    """Run ``cmd`` in its own process group, output to ``log``; stop the group after ``cap``
    seconds. Returns ``(exit code or None when stopped, seconds)``."""
    t0 = time.monotonic()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log.open("w") as fh:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        try:
            rc: Optional[int] = proc.wait(timeout=cap)
        except subprocess.TimeoutExpired:
            stop_group(proc)
            rc = None
    return rc, time.monotonic() - t0


def stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL, to the part's process group (torchrun and Ray start children)."""
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def read_part(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def run_part(args: argparse.Namespace, part: Part, left: float, out: Path) -> dict[str, Any]:
    """One part in a child process, as a report entry."""
    cuda = args.device.startswith("cuda")
    cap = min(part.cap_cuda if cuda else part.cap_cpu, left)
    if part.name == "adapt_paper":  # the last part gets what is left
        cap = max(cap, left) if cuda else cap
    entry: dict[str, Any] = {"name": part.name, "what": part.what, "cap_s": round(cap)}
    if part.name in args.skip.split(","):
        return {**entry, "status": "skipped", "reason": "--skip", "seconds": 0.0}
    if cap < MIN_PART_S:
        reason = f"only {left:.0f} s of the budget left"
        return {**entry, "status": "skipped", "reason": reason, "seconds": 0.0}
    part_file, log = out / "parts" / f"{part.name}.json", out / "logs" / f"{part.name}.log"
    part_file.unlink(missing_ok=True)
    rc, seconds = run_guarded(child_command(args, part.name, part_file, cap), cap, log)
    data = read_part(part_file)
    status = data.get("status") or "failed"
    if rc is None and status in ("passed", "skipped"):  # done, stopped while exiting
        data["note"] = f"finished, then stopped at its cap of {cap:.0f} s while exiting"
    elif rc is None:
        status, data["reason"] = "timeout", f"stopped at its cap of {cap:.0f} s"
    elif rc != 0 and status == "passed":
        status = "failed"
    if status == "failed" and not data.get("reason"):
        data["reason"] = f"exit code {rc}; see logs/{part.name}.log: " + log_tail(log)
    entry.update(status=status, seconds=round(seconds, 1), log=f"logs/{part.name}.log")
    entry.update({k: v for k, v in data.items() if k != "status"})
    return entry


def log_tail(log: Path, lines: int = 6) -> str:
    try:
        return " | ".join(log.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""


def orchestrate(args: argparse.Namespace) -> int:
    out = Path(args.out)
    for sub in ("parts", "logs"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    chosen = [n.strip() for n in args.parts.split(",")] if args.parts else list(NAMES)
    unknown = sorted(set(chosen) - set(NAMES))
    if unknown:
        print(f"unknown parts {unknown}; known: {', '.join(NAMES)}", file=sys.stderr)
        return 2
    started, t0 = dt.datetime.now(dt.timezone.utc), time.monotonic()
    entries = []
    for part in PARTS:
        if part.name not in chosen:
            continue
        left = args.budget_s - RESERVE_S - (time.monotonic() - t0)
        print(f"[gpu-check] {part.name} ({part.what}) ...", flush=True)
        entry = run_part(args, part, left, out)
        print(f"[gpu-check] {part.name}: {entry['status']} in {entry['seconds']:.0f} s "
              f"{entry.get('reason', '')}", flush=True)  # fmt: skip
        entries.append(entry)
        write_reports(out, report(args, started, time.monotonic() - t0, entries))
    data = report(args, started, time.monotonic() - t0, entries)
    write_reports(out, data)
    print(f"[gpu-check] report: {out / 'report.md'} ({data['total_s']:.0f} s)", flush=True)
    return 0 if all(ok(e) for e in entries) else 1


def ok(entry: dict[str, Any]) -> bool:
    """Passed or skipped; the paper preset may also stop at its cap (it gets what is left)."""
    return entry["status"] in ("passed", "skipped") or (
        entry["name"] == "adapt_paper" and entry["status"] == "timeout"
    )


def report(
    args: argparse.Namespace, started: dt.datetime, seconds: float, entries: list[dict[str, Any]]
) -> dict[str, Any]:
    counts = {s: sum(e["status"] == s for e in entries) for s in ("passed", "skipped", "failed")}
    counts["timeout"] = sum(e["status"] == "timeout" for e in entries)
    env: dict[str, Any] = next((e.get("results", {}) for e in entries if e["name"] == "env"), {})
    return {
        "started": started.strftime("%Y-%m-%d %H:%M UTC"),
        "device_arg": args.device,
        "device": env.get("device", ""),
        "budget_s": args.budget_s,
        "total_s": round(seconds, 1),
        "size": args.size,
        "counts": counts,
        "parts": entries,
    }


def write_reports(out: Path, data: dict[str, Any]) -> None:
    from gpu_report import markdown  # noqa: PLC0415 (bench/ is on sys.path as the script's dir)

    for name, text in (("report.json", json.dumps(data, indent=2)), ("report.md", markdown(data))):
        tmp = out / (name + ".part")
        tmp.write_text(text + "\n")
        os.replace(tmp, out / name)


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    if args.record:
        from gpu_report import record  # noqa: PLC0415

        print(record(Path(args.record), ROOT / "bench" / "RESULTS.md"))
        return 0
    if args.part:
        from gpu_parts import run_in_child  # noqa: PLC0415 (torch only in the children)

        return run_in_child(args)
    return orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())

"""One torchrun rank of ``bench/gpu_check.py``'s torchrun part: ``lovecs adapt`` in a process group.

The engine treats one process as no group at all (``distributed.start`` returns None when
``WORLD_SIZE`` is 1), and one GPU cannot hold two NCCL ranks. So this rank joins the group
itself, as ``distributed.start`` does for several ranks (NCCL for CUDA tensors and gloo for the
rest on a GPU, gloo alone on a CPU), hands the session to the engine and runs the command: the
multi-process code path (DDP, synced CSN statistics, combined pseudo-label maps, rank 0's
writes) on one rank. ``GPU_CHECK_RANK_INFO`` names a JSON file for the group's backend.

    python -m torch.distributed.run --standalone --nproc_per_node 1 bench/gpu_rank.py \\
        --progress json adapt --model M --target T --out O ...
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from lovecs_core.cli.main import build_parser
from lovecs_core.cli.main import main as cli_main
from lovecs_core.compute.device import resolve_device
from lovecs_core.model.csn import sync_statistics
from lovecs_core.parallel import distributed


def join(device_spec: str) -> distributed.Session:
    """The process group and the engine's session for this rank."""
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_spec)
    if device.type == "cuda":
        device = torch.device("cuda", local % torch.cuda.device_count())
        torch.cuda.set_device(device)
    backend = "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend)
    session = distributed.Session(rank, world, local, device, dist.new_group(), True)
    distributed._SESSION = session  # what distributed.start() keeps for several ranks
    sync_statistics(session.csn_group)
    return session


def describe(session: distributed.Session) -> dict:
    """The group's backend, and one all-reduce on the rank's device (NCCL on a GPU)."""
    t = torch.ones(4, device=session.device)
    dist.all_reduce(t)
    info = {
        "rank": session.rank,
        "world": session.world,
        "device": str(session.device),
        "backend": str(dist.get_backend()),
        "all_reduce_on_device": t.tolist() == [float(session.world)] * 4,
    }
    if session.device.type == "cuda":
        info["nccl"] = ".".join(map(str, torch.cuda.nccl.version()))
    return info


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    session = join(args.device)
    info = describe(session)
    path = os.environ.get("GPU_CHECK_RANK_INFO")
    if path:
        Path(path).write_text(json.dumps(info))
    print(f"rank {session.rank}: {info}", file=sys.stderr)
    try:
        return cli_main(argv)
    finally:
        distributed.finish()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

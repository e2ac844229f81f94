"""Faults during adaptation: a GPU that runs out of memory while training, computing AdaBN
statistics or pseudo-labelling (simulated on the CPU), and a run killed after a self-training
round, then resumed with ``--resume``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

from lovecs_core.adaptation.adapt import adapt
from lovecs_core.adaptation.config import make_config
from lovecs_core.cli.main import main
from lovecs_core.compute.oom import OutOfGpuMemory
from lovecs_core.contract import checkpoint_path
from lovecs_core.model.card import load_model_file
from lovecs_core.model.networks import model_from_file
from lovecs_core.rasters.labelled import pair_rasters

from .conftest import PY, ROOT, temporary_files


def oom_when(
    net: torch.nn.Module, fails: Callable[[torch.nn.Module, int], bool]
) -> dict[str, list[int]]:
    """Make ``net`` raise CUDA's out-of-memory error whenever ``fails(net, batch)``; returns the
    batch sizes of the passes that failed and of those that went through, per mode."""
    seen: dict[str, list[int]] = {"failed": [], "train": [], "eval": []}

    def hook(module: torch.nn.Module, args: tuple) -> None:
        n = int(args[0].shape[0])
        if fails(module, n):
            seen["failed"].append(n)
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        seen["train" if module.training else "eval"].append(n)

    net.register_forward_pre_hook(hook)
    return seen


# (method, network mode that runs out of memory, settings, the warnings the log must hold)
OOM_CASES = [
    (
        "lovecs",
        "train",
        dict(batch_size=4),
        [
            "out of GPU memory with 4 training windows per domain at a time: going on with 2 "
            "(gradients accumulated over them)",
            "with 2 training windows per domain at a time: going on with 1",
        ],
    ),
    (
        "adabn",
        "train",
        dict(batch_size=4, bn_windows=8),
        ["out of GPU memory with 4 statistics windows at a time: going on with 2"],
    ),
    (
        "lovecs",
        "eval",
        dict(pl_batch=4),
        ["out of GPU memory with 4 pseudo-labelling tiles at a time: going on with 2"],
    ),
]


@pytest.mark.parametrize(
    "method,mode,settings,warnings",
    OOM_CASES,
    ids=["training", "adabn-statistics", "pseudo-labels"],
)
def test_gpu_out_of_memory_while_adapting_halves_the_batch(
    adapt_inputs, caplog, method, mode, settings, warnings
):
    card, net = model_from_file(str(adapt_inputs["model"]))
    limit = 1 if "training" in warnings[0] else 2
    seen = oom_when(net, lambda m, n: m.training == (mode == "train") and n > limit)
    cfg = make_config(
        "fast",
        **{
            "iterations": 4,
            "refresh_every": 2,
            "crop": 32,
            "pl_tile": 32,
            "min_confidence": 0,
            "device": "cpu",
            **settings,
        },
    )
    out = adapt_inputs["out"] / "adapted.lovecs"
    with caplog.at_level("WARNING"):
        result = adapt(
            (card, net),
            adapt_inputs["scene"],
            out,
            method=method,
            config=cfg,
            source_pairs=pair_rasters([adapt_inputs["images"]], [adapt_inputs["labels"]]),
            keep_adapted=True,
        )
    for text in warnings:
        assert text in caplog.text
    # the smaller size is kept for the rest of the run: one failure per halving
    assert caplog.text.count("out of GPU memory") == len(warnings) == len(seen["failed"])
    assert max(seen[mode]) == limit  # and the work went on at that size
    assert result.output == out and load_model_file(out)[0].adaptation["method"] == method
    assert sorted(p.name for p in adapt_inputs["out"].iterdir()) == [
        "adapted.lovecs"
    ]  # no checkpoint


def test_gpu_out_of_memory_for_a_single_training_window_is_a_clear_error(adapt_inputs):
    card, net = model_from_file(str(adapt_inputs["model"]))
    oom_when(net, lambda m, n: m.training)
    cfg = make_config(
        "fast", iterations=2, refresh_every=2, crop=32, pl_tile=32, batch_size=1, device="cpu"
    )
    with pytest.raises(
        OutOfGpuMemory,
        match="even for one of the training windows per domain: choose a smaller --crop, or "
        r"run on the CPU \(--device cpu\)",
    ):
        adapt(
            (card, net),
            adapt_inputs["scene"],
            adapt_inputs["out"] / "adapted.lovecs",
            config=cfg,
            source_pairs=pair_rasters([adapt_inputs["images"]], [adapt_inputs["labels"]]),
        )
    assert list(adapt_inputs["out"].iterdir()) == []  # no model, no checkpoint (no round finished)


# -- adapt --resume -------------------------------------------------------------------------------

#: Runs ``lovecs ARGS`` with the training step blocked from the step after ``STEPS`` on, so the
#: test can kill the process while it holds a checkpoint.
BLOCKED_CHILD = """
import sys, time
from lovecs_core.adaptation import self_training as rounds
from lovecs_core.cli.main import main
real, done = rounds._train_step, []
def blocked(*args, **kwargs):
    done.append(1)
    if len(done) > {steps}:
        time.sleep(600)
    return real(*args, **kwargs)
rounds._train_step = blocked
sys.exit(main(sys.argv[1:]))
"""


def adapt_args(inputs: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return [
        "adapt",
        "--model",
        str(inputs["model"]),
        "--target",
        str(inputs["scene"]),
        "--out",
        str(out),
        "--preset",
        "fast",
        "--iterations",
        "6",
        "--refresh-every",
        "2",
        "--crop",
        "32",
        "--pl-tile",
        "32",
        "--batch-size",
        "2",
        "--keep-adapted",
        "--device",
        "cpu",
        "--source-images",
        str(inputs["images"]),
        "--source-labels",
        str(inputs["labels"]),
        *extra,
    ]


def json_run(capsys, args: list[str]) -> tuple[int, list[dict]]:
    capsys.readouterr()
    rc = main(["--progress", "json", *args])
    return rc, [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_adapt_resume_after_a_kill_continues_from_the_last_round(adapt_inputs, capsys, caplog):
    out = adapt_inputs["out"] / "adapted.lovecs"
    ckpt = checkpoint_path(out)
    # the reference: the same adaptation, never interrupted
    reference = adapt_inputs["out"].parent / "reference.lovecs"
    rc, _ = json_run(capsys, adapt_args(adapt_inputs, reference))
    assert rc == 0 and not checkpoint_path(reference).exists()

    # killed (SIGKILL) in round 2 of 3, after round 1's checkpoint was written
    child = subprocess.Popen(
        [PY, "-c", BLOCKED_CHILD.format(steps=2), *adapt_args(adapt_inputs, out)],
        cwd=str(ROOT),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not ckpt.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ckpt.exists(), child.stderr.read() if child.poll() is not None else "no checkpoint"
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=10)
    child.stderr.close()
    assert sorted(p.name for p in adapt_inputs["out"].iterdir()) == ["adapted.lovecs.ckpt"]

    # the checkpoint belongs to this run: other settings are refused, naming what differs
    rc, lines = json_run(capsys, adapt_args(adapt_inputs, out, "--lr", "0.5", "--resume"))
    assert rc == 1 and "different setting lr" in lines[-1]["message"]
    assert "delete it to start over" in lines[-1]["message"]
    assert f"its last completed round is kept in {ckpt}: rerun the same command with --resume" in (
        caplog.text
    )

    rc, lines = json_run(capsys, adapt_args(adapt_inputs, out, "--resume"))
    assert rc == 0
    progress = [e for e in lines if e["type"] == "progress"]
    resumed = [e for e in progress if e["extra"].get("resumed")]
    assert len(resumed) == 1 and resumed[0]["message"].startswith(
        "resumed after round 1/3 (iteration 2/6)"
    )
    pseudo_rounds = {e["extra"]["round"] for e in progress if e["stage"] == "pseudo-labels"}
    assert pseudo_rounds == {2, 3}  # round 1 was not done again
    iterations = [e["extra"]["iteration"] for e in progress if e["stage"] == "training"]
    assert min(i for i in iterations if i) == 2 and max(iterations) == 6
    result = lines[-1]
    assert result["type"] == "result" and [r["round"] for r in result["rounds"]] == [1, 2, 3]
    assert not ckpt.exists() and temporary_files(adapt_inputs["out"]) == []
    # the finished model loads, and equals the one of the uninterrupted run
    card, state = load_model_file(out)
    assert card.adaptation["method"] == "lovecs"
    _, expected = load_model_file(reference)
    for key, value in expected.items():
        assert np.allclose(value.numpy(), state[key].numpy(), atol=1e-5), key


def test_resume_without_a_checkpoint_starts_from_the_beginning(adapt_inputs, capsys, caplog):
    out = adapt_inputs["out"] / "adapted.lovecs"
    with caplog.at_level("INFO"):
        rc, lines = json_run(capsys, adapt_args(adapt_inputs, out, "--iterations", "2", "--resume"))
    assert rc == 0, lines[-1]
    assert f"no checkpoint {checkpoint_path(out)}" in caplog.text
    assert not any(e["extra"].get("resumed") for e in lines if e["type"] == "progress")
    assert out.is_file() and not checkpoint_path(out).exists()

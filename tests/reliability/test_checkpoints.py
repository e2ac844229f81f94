"""An adaptation checkpoint whose identity matches is still checked before it is resumed:
weights that are not finite, a round or iteration the run could not have reached, and weights
of other shapes are refused with one line saying to delete it; a checkpoint that cannot be
written (a full disk) is one line too, with nothing left behind."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
import torch

from lovecs_core.adaptation import resume
from lovecs_core.adaptation import self_training as rounds
from lovecs_core.contract import checkpoint_path

from .conftest import temporary_files
from .test_adapt_faults import adapt_args, json_run


@pytest.fixture
def stopped_after_round_one(adapt_inputs, capsys, monkeypatch) -> Path:
    """An adaptation interrupted in round 2 of 3: its checkpoint holds round 1."""
    real, done = rounds._train_step, []

    def step(*args, **kwargs):
        done.append(1)
        if len(done) > 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(rounds, "_train_step", step)
    out = adapt_inputs["out"] / "adapted.lovecs"
    rc, _ = json_run(capsys, adapt_args(adapt_inputs, out))
    monkeypatch.setattr(rounds, "_train_step", real)
    assert rc == 130 and checkpoint_path(out).is_file()
    return out


def _tamper(ckpt: Path, how: str) -> None:
    import json

    state = torch.load(ckpt, weights_only=True)
    if how == "nan_weights":
        state["model"] = {
            k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
            for k, v in state["model"].items()
        }
    elif how == "round_99":
        progress = json.loads(state["progress"])
        progress["round"] = 99
        state["progress"] = json.dumps(progress)
    elif how == "other_shapes":
        key = next(k for k, v in state["model"].items() if v.ndim == 4)
        state["model"][key] = torch.zeros(3, 3, 1, 1)
    torch.save(state, ckpt)


CASES = [
    ("nan_weights", "are not finite (NaN or infinity)"),
    ("round_99", "it says round 99, but this run has rounds 1 to 3"),
    ("other_shapes", "does not fit this model (Error(s) in loading state_dict"),
]


@pytest.mark.parametrize("how,text", CASES, ids=[c for c, _ in CASES])
def test_a_tampered_checkpoint_is_refused_before_resuming(
    adapt_inputs, capsys, stopped_after_round_one, how, text
):
    out = stopped_after_round_one
    _tamper(checkpoint_path(out), how)
    rc, lines = json_run(capsys, adapt_args(adapt_inputs, out, "--resume"))
    message = lines[-1]["message"]
    assert rc == 1 and lines[-1]["type"] == "error"
    assert text in message and message.endswith("delete it to start over")
    assert str(checkpoint_path(out)) in message and "\n" not in message
    assert not out.exists()


def test_a_full_disk_while_writing_the_checkpoint_is_one_line(tmp_path, monkeypatch):
    """torch's C++ writer says "enforce fail at inline_container.cc ... unexpected pos" on a
    full disk: the user reads "disk full", and no partial checkpoint stays."""

    def full(obj, path, *a, **k):
        Path(path).write_bytes(b"half a checkpoint")
        raise RuntimeError(
            "[enforce fail at inline_container.cc:664] . unexpected pos 14680064 vs 14679952"
        )

    monkeypatch.setattr(resume.torch, "save", full)
    monkeypatch.setattr(resume.card, "FULL_DISK_BYTES", 1024**5)  # every disk is "full" here
    checkpoint = resume.AdaptCheckpoint(tmp_path / "a.lovecs", {"model": "x"}, resume=False)
    with pytest.raises(resume.AdaptError, match="^disk full: cannot write the checkpoint"):
        checkpoint.save(round=1)
    assert list(tmp_path.iterdir()) == [] and temporary_files(tmp_path) == []

    def enospc(obj, path, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(resume.torch, "save", enospc)
    monkeypatch.setattr(resume.card, "FULL_DISK_BYTES", 0)
    with pytest.raises(resume.AdaptError, match="^disk full"):
        checkpoint.save(round=1)


def test_train_checkpoint_and_model_file_on_a_full_disk_are_one_line(tmp_path, monkeypatch):
    """``lovecs train`` on a disk that fills up: its checkpoint (torch) and its model file
    (safetensors) say "disk full" and leave no partial file."""
    import safetensors.torch

    from lovecs_core.model import card
    from lovecs_core.model.card import ModelFileError, save_model
    from lovecs_core.training import checkpoint
    from tests.core.helpers import tiny_card

    def full(obj, path, *a, **k):
        Path(path).write_bytes(b"")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    monkeypatch.setattr(checkpoint.torch, "save", full)
    monkeypatch.setattr(card, "FULL_DISK_BYTES", 1024**5)
    with pytest.raises(checkpoint.CheckpointError, match="^disk full: cannot write the checkpoint"):
        checkpoint.save_checkpoint(tmp_path / "m.lovecs.ckpt", iteration=5)

    def no_space(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"half")
        raise OSError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(safetensors.torch, "save_file", no_space)
    monkeypatch.setattr(card, "FULL_DISK_BYTES", 0)
    with pytest.raises(ModelFileError, match="^disk full: cannot write the model file"):
        save_model(tmp_path / "m.lovecs", tiny_card(), {"w": torch.zeros(2)})
    assert list(tmp_path.iterdir()) == []


# -- lovecs train --resume: its checkpoint is checked as the adaptation's is ---------------------


def _train_args(tmp_path: Path, out: Path, *extra: str) -> list[str]:
    from tests.core.synthetic import tiny_train_args, write_classes, write_source

    images, labels = write_source(tmp_path / "src", n=1, size=48)
    classes = write_classes(tmp_path / "classes.json")
    more = ["--iterations", "4", "--checkpoint-every", "2", "--crop", "32", "--batch-size", "2"]
    return tiny_train_args(images, labels, classes, out, *more, *extra)


@pytest.fixture
def train_stopped_at_iteration_three(tmp_path, capsys, monkeypatch) -> Path:
    """``lovecs train`` interrupted in iteration 3 of 4: its checkpoint holds iteration 2."""
    from lovecs_core.training import source

    real, done = source.optimizer_step, []

    def step(*args, **kwargs):
        done.append(1)
        if len(done) > 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(source, "optimizer_step", step)
    out = tmp_path / "out" / "trained.lovecs"
    rc, _ = json_run(capsys, _train_args(tmp_path, out))
    monkeypatch.setattr(source, "optimizer_step", real)
    assert rc == 130 and checkpoint_path(out).is_file() and not out.exists()
    return out


def _tamper_train(ckpt: Path, how: str) -> None:
    if how == "unreadable":
        ckpt.write_bytes(b"half a checkpoint")
        return
    state = torch.load(ckpt, weights_only=True)
    if how == "nan_weights":
        state["model"] = {
            k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
            for k, v in state["model"].items()
        }
    elif how == "iteration_99":
        state["iteration"] = 99
    elif how == "losses":
        state["losses"] = state["losses"][:1]
    elif how == "other_shapes":
        key = next(k for k, v in state["model"].items() if v.ndim == 4)
        state["model"][key] = torch.zeros(3, 3, 1, 1)
    torch.save(state, ckpt)


TRAIN_CASES = [
    ("unreadable", "cannot be read ("),
    ("nan_weights", "are not finite (NaN or infinity)"),
    ("iteration_99", "it says iteration 99, but this run has 4 iterations"),
    ("losses", "it holds 1 losses for 2 iterations"),
    ("other_shapes", "does not fit this model (Error(s) in loading state_dict"),
]


@pytest.mark.parametrize("how,text", TRAIN_CASES, ids=[c for c, _ in TRAIN_CASES])
def test_a_tampered_train_checkpoint_is_refused_before_resuming(
    tmp_path, capsys, train_stopped_at_iteration_three, how, text
):
    out = train_stopped_at_iteration_three
    ckpt = checkpoint_path(out)
    _tamper_train(ckpt, how)
    rc, lines = json_run(capsys, _train_args(tmp_path, out, "--resume"))
    message = lines[-1]["message"]
    assert rc == 1 and lines[-1]["type"] == "error"
    assert text in message and message.endswith("delete it to start over")
    assert str(ckpt) in message and "\n" not in message
    assert not out.exists() and ckpt.is_file()  # kept: the user decides to delete it

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from lovecs_core.cli.main import main
from lovecs_core.model.card import load_classes, read_card
from lovecs_core.model.networks import architecture, model_from_file
from lovecs_core.progress import Cancelled, CancelToken, Reporter
from lovecs_core.rasters.labelled import RasterSource, band_statistics, pair_rasters
from lovecs_core.training.optim import IGNORE, make_optimizer, masked_cross_entropy, poly_schedule
from lovecs_core.training.source import TrainConfig, checkpoint_path, fpn_architecture, train_source
from tests.core.synthetic import write_classes, write_source

TINY = architecture("tiny", csn=True, width=8, depth=2)


@pytest.fixture
def source(tmp_path: Path):
    images, labels = write_source(tmp_path / "src", n=2, size=64, gsd=0.5)
    classes = load_classes(write_classes(tmp_path / "classes.json"))
    return tmp_path, pair_rasters([images], [labels]), classes


def test_poly_schedule_and_ignored_loss():
    optimizer = make_optimizer(torch.nn.Linear(2, 2), 0.01, 0.9, 0.0)
    schedule = poly_schedule(optimizer, 100, 0.9)
    seen = []
    for _ in range(100):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert seen[0] == pytest.approx(0.01)
    assert seen[50] == pytest.approx(0.01 * 0.5**0.9)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0)
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    target = torch.full((2, 4, 4), IGNORE)
    loss = masked_cross_entropy(logits, target)
    assert loss.item() == 0.0
    loss.backward()  # still differentiable
    target[0, 0, 0] = 1
    assert masked_cross_entropy(logits, target).item() == pytest.approx(
        torch.nn.functional.cross_entropy(logits[0:1, :, 0, 0], torch.tensor([1])).item()
    )


def test_training_reduces_the_loss_and_writes_a_complete_card(source):
    tmp_path, pairs, classes = source
    torch.manual_seed(0)
    cfg = TrainConfig(iterations=40, batch_size=4, crop=32, lr=0.05, device="cpu")
    result = train_source(pairs, classes, tmp_path / "m.lovecs", arch=TINY, config=cfg)
    first, last = np.mean(result.losses[:5]), np.mean(result.losses[-5:])
    assert last < 0.5 * first
    card = read_card(result.output)
    stats = band_statistics([RasterSource(p[0]) for p in pairs])
    assert card.normalization["source"]["mean"] == pytest.approx(stats.mean)
    assert card.gsd == pytest.approx(0.5)
    assert card.class_codes() == [1, 2, 3] and card.architecture["csn"] is True
    assert card.provenance["source_images"] == [str(p[0].resolve()) for p in pairs]
    assert card.provenance["source_labels"] == [str(p[1].resolve()) for p in pairs]
    assert card.provenance["training"]["iterations"] == 40
    assert card.band_dtype == "uint8" and tuple(card.band_range) == (0.0, 255.0)
    # the saved model classifies the training image's pixels well
    _, model = model_from_file(str(result.output))
    src = RasterSource(pairs[0][0], label_path=pairs[0][1])
    data, _ = src.read(0, 0, src.width, src.height)
    mean = np.asarray(stats.mean, np.float32)[:, None, None]
    std = np.asarray(stats.std, np.float32)[:, None, None]
    with torch.no_grad():
        pred = model(torch.from_numpy((data - mean) / std)[None]).argmax(1)[0].numpy() + 1
    assert (pred == src.labels).mean() > 0.9


def test_cancel_then_resume_from_checkpoint(source):
    tmp_path, pairs, classes = source
    out = tmp_path / "new" / "folder" / "m.lovecs"  # checkpoints create the model's folder
    cfg = TrainConfig(iterations=12, batch_size=2, crop=32, device="cpu", checkpoint_every=4)
    token = CancelToken()

    def cancel_at_6(event):
        if event.stage == "training" and event.extra.get("iteration", 0) >= 6:
            token.cancel()

    with pytest.raises(Cancelled):
        train_source(
            pairs, classes, out, arch=TINY, config=cfg, reporter=Reporter(cancel_at_6, token)
        )
    assert not out.exists() and checkpoint_path(out).is_file()
    messages = []
    result = train_source(
        pairs,
        classes,
        out,
        arch=TINY,
        config=cfg,
        resume=True,
        reporter=Reporter(lambda e: messages.append(e.message)),
    )
    assert "resumed at iteration 4" in messages
    assert len(result.losses) == 12 and out.is_file() and not checkpoint_path(out).exists()


def test_fpn_trains_one_step(source):
    tmp_path, pairs, classes = source
    cfg = TrainConfig(iterations=1, batch_size=2, crop=40, device="cpu")  # crop -> 64
    result = train_source(
        pairs,
        classes,
        tmp_path / "f.lovecs",
        arch=fpn_architecture("resnet18", (32, 32)),
        config=cfg,
    )
    card = read_card(result.output)
    assert card.architecture["encoder"] == "resnet18" and card.provenance["training"]["crop"] == 64
    assert np.isfinite(result.losses[0])
    with pytest.raises(ValueError, match="multiple of 32"):
        fpn_architecture("resnet18", (64, 16))


def test_cli_train_json_progress(source, capsys):
    tmp_path, pairs, _ = source
    out = tmp_path / "cli.lovecs"
    code = main(
        [
            "--progress",
            "json",
            "train",
            "--images",
            str(pairs[0][0].parent),
            "--labels",
            str(pairs[0][1].parent),
            "--classes",
            str(tmp_path / "classes.json"),
            "--out",
            str(out),
            "--arch",
            "tiny",
            "--iterations",
            "3",
            "--batch-size",
            "2",
            "--crop",
            "32",
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    stages = {line.get("stage") for line in lines if line["type"] == "progress"}
    assert {"reading", "training"} <= stages
    assert lines[-1]["type"] == "result" and lines[-1]["output"] == str(out)
    assert read_card(out).provenance["training"]["iterations"] == 3

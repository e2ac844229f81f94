"""Adaptation under torchrun (issue 11): 2 gloo processes on the CPU against one process.

Tolerance: every weight and CSN statistic of the adapted model within ``rtol=1e-5, atol=1e-6``
of the one-process model; pseudo-label records (thresholds, pixels per class) identical. The two
runs draw the same windows and compute the same sums; only the order of the float32 additions
differs (all-reduce of per-rank partial sums instead of one sum over the batch), which moves
results by a few units in the last place (measured: at most 5e-7 absolute on statistics of
about 12, 1e-8 on weights, after 6 steps). Without the CSN synchronisation the same run differs
by 1e-3 to 1e-1, so the tolerance separates a correct run from a wrong one by four orders.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from osgeo import gdal
from torch import nn

from lovecs_core.adaptation.adabn import recompute_target_statistics
from lovecs_core.adaptation.config import make_config
from lovecs_core.adaptation.pseudolabels import predict_scene
from lovecs_core.adaptation.scene_maps import map_scene
from lovecs_core.cli import torchrun as torchrun_entry
from lovecs_core.cli.main import main
from lovecs_core.contract import checkpoint_path
from lovecs_core.model.card import load_model_file
from lovecs_core.model.csn import CrossSensorNorm, replace_bn_with_csn
from lovecs_core.model.sync_layers import global_batch, share_dropout_masks
from lovecs_core.parallel import distributed
from lovecs_core.progress import Reporter
from lovecs_core.rasters.labelled import RasterSource
from lovecs_core.training.sampling import WindowSampler
from tests.core.helpers import write_geotiff
from tests.core.synthetic import tiny_train_args, write_classes, write_source, write_target

ROOT = Path(__file__).resolve().parents[3]
RTOL, ATOL = 1e-5, 1e-6
WORLD = 2


# -- unit: the collectives, on 2 spawned gloo processes --------------------------------------------
def _tiny_net() -> nn.Module:
    torch.manual_seed(1)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 3, 1)
    )
    return replace_bn_with_csn(net)


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    """An input far from zero mean (the variance must not cancel) and an output weighting."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 3, 6, 7, generator=g) * 2.0 + 5.0
    return x, torch.randn(5, 3, 6, 7, generator=g)


def _norm_pass(layer: CrossSensorNorm, x: torch.Tensor, w: torch.Tensor) -> dict[str, torch.Tensor]:
    """Two training-mode passes in the target slot (a backward through the second)."""
    layer.train()
    layer.source = False
    with torch.no_grad():
        layer(x)
    x = x.clone().requires_grad_()
    (layer(x) * w).sum().backward()
    assert layer.weight.grad is not None and layer.bias.grad is not None and x.grad is not None
    return {
        "x_grad": x.grad,
        "w_grad": layer.weight.grad,
        "b_grad": layer.bias.grad,
        "mean": layer.target_running_mean.clone(),
        "var": layer.target_running_var.clone(),
        "tracked": layer.target_num_batches_tracked.clone(),
        "source_mean": layer.running_mean.clone(),
    }


def _dropouts() -> nn.Module:
    return nn.Sequential(nn.Dropout2d(0.5, inplace=True), nn.Dropout(0.3)).train()


def _make_layer() -> CrossSensorNorm:
    layer = CrossSensorNorm(3)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([1.5, 0.5, -1.0]))
        layer.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))
    return layer


def _sampler(scene: Path) -> WindowSampler:
    return WindowSampler(
        [RasterSource(scene)],
        [1, 2, 3],
        16,
        [500.0] * 3,
        [100.0] * 3,
        scale_range=(0.8, 1.25),
        weighting="valid",
        seed=3,
    )


def _maps(scene: Path, part, mass=None) -> tuple[np.ndarray, np.ndarray]:
    net = _tiny_net().eval()
    return predict_scene(
        net, RasterSource(scene), [500.0] * 3, [100.0] * 3, [1.0, 1.5], device=torch.device("cpu"),
        tile=16, margin=4, batch=1, amp=False, part=part, mass=mass,
    )  # fmt: skip


def _worker(rank: int, port: int, folder: str) -> None:
    """One rank: synced CSN, AdaBN, split maps, shared errors; results to ``rank{r}.pt``."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(WORLD),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    session = distributed.start("cpu")
    assert session is not None and session.world == WORLD
    try:
        out: dict = {}
        x, w = _batch()
        mine = session.share(len(x))  # 2 and 3 of the 5 inputs: uneven shares
        out["share"] = (mine.start, mine.stop)
        out["norm"] = _norm_pass(
            _make_layer(), x[mine.start : mine.stop], w[mine.start : mine.stop]
        )
        torch.manual_seed(7)
        drop = _dropouts()
        share_dropout_masks(drop)
        with global_batch(len(x), mine):
            out["dropout"] = drop(x[mine.start : mine.stop].clone())
        out["after_dropout"] = torch.rand(4)  # the generators are still in step
        net = _tiny_net()
        # 7 windows in batches of 3: shares 1+2, 1+2, then 0+1 (rank 0 forwards an empty batch)
        scene = Path(folder) / "scene.tif"
        recompute_target_statistics(net, _sampler(scene), 7, 3, torch.device("cpu"), amp=False)
        out["adabn"] = {k: v.clone() for k, v in net.state_dict().items()}
        pred, conf = _maps(scene, session.part)
        out["mapped_pixels"] = int((pred != 255).sum())
        session.combine_maps(pred, conf)
        out["pred"], out["conf"] = pred, conf
        out["mass"] = np.zeros(3)  # map_scene sums the class probabilities over the ranks
        cfg = make_config("fast", pl_tile=16, pl_margin=4, pl_batch=1, amp=False)
        map_scene(
            _tiny_net(), "source", RasterSource(scene), [500.0] * 3, [100.0] * 3, [1.0, 1.5], cfg,
            torch.device("cpu"), 1, Reporter(), mass=out["mass"],
        )  # fmt: skip
        try:
            distributed.agree(OSError("disk on fire") if rank == 1 else None)
        except OSError as exc:
            out["agree"] = str(exc)
        out["from_main"] = distributed.from_main(lambda: {"rank": session.rank})
        torch.save(out, Path(folder) / f"rank{rank}.pt")
    finally:
        distributed.finish()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_collectives_on_two_processes_equal_one_process(tmp_path: Path):
    data = np.random.default_rng(0).normal(600, 60, (3, 40, 44)).clip(1, 1023).astype(np.uint16)
    data[:, :12, :12] = 0  # a nodata corner
    scene = write_geotiff(tmp_path / "scene.tif", data, nodata=0)
    t0 = time.monotonic()
    ctx = torch.multiprocessing.start_processes(
        _worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=False, start_method="spawn"
    )
    while not ctx.join(timeout=1):  # raises with the child's traceback when one fails
        if time.monotonic() - t0 > 120:
            for p in ctx.processes:
                p.kill()
            pytest.fail("the spawned ranks did not finish within 120 s")
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]

    # CSN in training mode: outputs' gradients, running statistics = one process, whole batch
    x, w = _batch()
    one = _norm_pass(_make_layer(), x, w)
    assert [r["share"] for r in ranks] == [(0, 2), (2, 5)]
    torch.testing.assert_close(torch.cat([r["norm"]["x_grad"] for r in ranks]), one["x_grad"])
    for key in ("w_grad", "b_grad"):  # each rank's share of the gradient; DDP sums them
        torch.testing.assert_close(sum(r["norm"][key] for r in ranks), one[key])
    for r in ranks:
        for key in ("mean", "var", "tracked", "source_mean"):
            torch.testing.assert_close(r["norm"][key], one[key], rtol=RTOL, atol=ATOL)
    assert not torch.allclose(one["var"], torch.ones(3))  # the statistics did move
    # without synchronisation, a rank's statistics would be those of its share alone
    alone = _norm_pass(_make_layer(), x[:2], w[:2])
    assert not torch.allclose(alone["var"], one["var"], rtol=1e-3)

    # dropout: the ranks drop what one process drops on the whole batch
    torch.manual_seed(7)
    dropped = _dropouts()(x.clone())
    torch.testing.assert_close(torch.cat([r["dropout"] for r in ranks]), dropped)
    assert 0 < int((dropped == 0).sum()) < dropped.numel()
    after = torch.rand(4)
    assert all(torch.equal(r["after_dropout"], after) for r in ranks)

    # AdaBN: the same target statistics as one process drawing the same windows
    net = _tiny_net()
    recompute_target_statistics(net, _sampler(scene), 7, 3, torch.device("cpu"), amp=False)
    for key, value in net.state_dict().items():
        for r in ranks:
            torch.testing.assert_close(r["adabn"][key], value, rtol=RTOL, atol=ATOL)
    assert not torch.equal(net[1].target_running_mean, net[1].running_mean)

    # pseudo-labelling split by tiles: each rank maps part, all get the whole map, bit for bit
    mass = np.zeros(3)
    pred, conf = _maps(scene, None, mass)
    assert 0 < ranks[0]["mapped_pixels"] < int((pred != 255).sum())
    assert ranks[0]["mapped_pixels"] + ranks[1]["mapped_pixels"] == int((pred != 255).sum())
    for r in ranks:
        np.testing.assert_array_equal(r["pred"], pred)
        np.testing.assert_array_equal(r["conf"], conf)
        np.testing.assert_allclose(r["mass"], mass, rtol=1e-6)

    # an error on one rank stops every rank with that rank's message; rank 0's answers reach all
    assert [r["agree"] for r in ranks] == ["rank 1: disk on fire", "disk on fire"]
    assert [r["from_main"] for r in ranks] == [{"rank": 0}] * 2


def test_other_commands_are_refused_under_torchrun(monkeypatch, capsys):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert distributed.launched_world() == 2
    assert torchrun_entry.main(["devices"]) == 1
    assert "only 'adapt' runs under torchrun" in capsys.readouterr().err
    assert distributed.current() is None  # no process group was joined


# -- end to end: torchrun --nproc_per_node 2 -m lovecs_core adapt ---------------------------------
@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("torchrun")
    images, labels = write_source(folder / "src", n=1, size=64)
    scene, _ = write_target(folder / "tgt", size=64, gsd=2.0, nodata_corner=8)
    model = folder / "source.lovecs"
    classes = write_classes(folder / "classes.json")
    args = tiny_train_args(images, labels, classes, model, "--sample-crops", "0")
    assert main(args) == 0
    return {
        "folder": folder,
        "model": model,
        "scene": scene,
        "image": images / "s0.tif",
        "label": labels / "s0.tif",
    }


def adapt_args(inputs: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return [
        "adapt", "--model", str(inputs["model"]), "--target", str(inputs["scene"]),
        "--out", str(out), "--method", "lovecs", "--preset", "fast", "--iterations", "6",
        "--refresh-every", "3", "--batch-size", "4", "--crop", "32", "--pl-tile", "32",
        "--source-images", str(inputs["image"]), "--source-labels", str(inputs["label"]),
        "--device", "cpu", "--no-amp", "--keep-adapted", *extra,
    ]  # fmt: skip


def torchrun(args: list[str], script: str = "-m lovecs_core") -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LOVECS_DIST_TIMEOUT_S": "120"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node", str(WORLD), *script.split(), *args]
    return subprocess.run(
        command, cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=240
    )


@pytest.fixture(scope="module")
def one_process(inputs) -> dict[str, Path]:
    out = inputs["folder"] / "one"
    out.mkdir()
    model, map_tif = out / "adapted.lovecs", out / "map.tif"
    assert main(["--progress", "none", *adapt_args(inputs, model, "--map", str(map_tif))]) == 0
    return {"model": model, "map": map_tif}


def assert_same_model(path: Path, reference: Path) -> None:
    card, state = load_model_file(path)
    ref_card, expected = load_model_file(reference)
    assert state.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(state[key], value, rtol=RTOL, atol=ATOL, msg=key)
    assert card.adaptation["rounds"] == ref_card.adaptation["rounds"]
    assert card.adaptation["health"]["verdict"] == ref_card.adaptation["health"]["verdict"]
    assert card.adaptation["final_loss"] == pytest.approx(ref_card.adaptation["final_loss"], 1e-5)


def read_map(path: Path) -> np.ndarray:
    return gdal.Open(str(path)).ReadAsArray()


def test_two_processes_match_one_process(inputs, one_process):
    out = inputs["folder"] / "two"
    out.mkdir()
    model, map_tif = out / "adapted.lovecs", out / "map.tif"
    run = torchrun(["--progress", "json", *adapt_args(inputs, model, "--map", str(map_tif))])
    assert run.returncode == 0, run.stderr
    lines = [json.loads(line) for line in run.stdout.splitlines()]  # rank 0's JSON lines only
    assert [e["type"] for e in lines].count("result") == 1 and lines[-1]["type"] == "result"
    training = [e for e in lines if e["type"] == "progress" and e["stage"] == "training"]
    assert training[-1]["extra"]["iteration"] == 6
    assert "rank 0 of 2 on cpu (gloo)" in run.stderr and "[rank 1]" not in run.stderr
    assert sorted(p.name for p in out.iterdir() if p.suffix != ".xml") == [
        "adapted.lovecs", "map.qml", "map.tif",
    ]  # fmt: skip
    assert_same_model(model, one_process["model"])
    # the map (rank 0 alone, with a model equal within the tolerance): at most 0.1 % differs
    assert np.mean(read_map(map_tif) != read_map(one_process["map"])) <= 1e-3
    card = load_model_file(model)[0]
    assert card.adaptation["rounds"][0]["class_pixels"][0] > 0  # several classes pseudo-labelled


#: torchrun runs this instead of ``-m lovecs_core``: rank 1 fails in round 2's first step.
FAILING_RANK = """
import sys
from lovecs_core.cli import torchrun
from lovecs_core.parallel import distributed
real, steps = distributed.Session.train_step, []
def failing(self, *args, **kwargs):
    steps.append(1)
    if self.rank == 1 and len(steps) == 4:
        raise OSError("disk on fire (injected)")
    return real(self, *args, **kwargs)
distributed.Session.train_step = failing
sys.exit(torchrun.main(sys.argv[1:]))
"""


def test_a_failing_rank_ends_the_job_and_resume_continues(inputs, one_process, tmp_path):
    script = tmp_path / "failing_rank.py"
    script.write_text(FAILING_RANK)
    out = tmp_path / "adapted.lovecs"
    t0 = time.monotonic()
    run = torchrun(adapt_args(inputs, out), script=str(script))
    assert run.returncode != 0
    assert time.monotonic() - t0 < 120  # no rank waits for the lost one until a timeout
    assert "[rank 1] lovecs adapt: error: disk on fire (injected)" in run.stderr
    # rank 0 kept round 1's checkpoint and says how to go on; nothing else was written
    assert f"its last completed round is kept in {checkpoint_path(out)}" in run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapted.lovecs.ckpt", "failing_rank.py"]

    run = torchrun(["--progress", "json", *adapt_args(inputs, out, "--resume")])
    assert run.returncode == 0, run.stderr
    progress = [e for e in map(json.loads, run.stdout.splitlines()) if e["type"] == "progress"]
    resumed = [e for e in progress if e["extra"].get("resumed")]
    assert len(resumed) == 1 and resumed[0]["message"].startswith("resumed after round 1/2")
    assert {e["extra"]["round"] for e in progress if e["stage"] == "pseudo-labels"} == {2}
    assert not checkpoint_path(out).exists()
    assert_same_model(out, one_process["model"])

"""Cancel during each stage of an adaptation and of a mapping run (the stage names of
``lovecs_core/contract.py``): the engine's cancellation is raised from the progress report of
that stage, as the plugin's cancel token or SIGTERM/SIGINT make it. Afterwards the inputs are
unchanged and the output folder holds nothing: no model, no map, no temporary file. The one
intended exception: once a self-training round has finished, the adaptation's checkpoint
(``OUT.ckpt``) stays so that ``lovecs adapt --resume`` can continue (the QGIS plugin, which
does not resume, removes it with the partial files)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np
import pytest
import torch

from lovecs_core.adaptation.adapt import adapt
from lovecs_core.adaptation.config import make_config
from lovecs_core.contract import (
    MAPPING,
    PSEUDO_LABELS,
    READING,
    RESAMPLING,
    STATISTICS,
    TRAINING,
    WRITING,
    checkpoint_path,
)
from lovecs_core.mapping.predict import predict_raster
from lovecs_core.progress import Cancelled, CancelToken, ProgressEvent, Reporter
from lovecs_core.rasters.labelled import pair_rasters
from tests.core.helpers import write_geotiff

from .conftest import snapshot, temporary_files


class CancelAt:
    """The user cancels at the first progress event of ``stage`` whose message holds ``text``
    (one inside the stage: 0 < fraction < 1): the token is set and the cancellation raised
    there; every later report raises it again, as in the engine (:attr:`reporter`)."""

    def __init__(self, stage: str, text: str) -> None:
        self.stage, self.text = stage, text
        self.events: list[ProgressEvent] = []
        self.fired: Optional[ProgressEvent] = None
        self.token = CancelToken()
        self.reporter = Reporter(self, self.token)

    def __call__(self, event: ProgressEvent) -> None:
        self.events.append(event)
        if self.fired is None and self._matches(event) and 0 < event.fraction < 1:
            self._fire(event)

    def _matches(self, event: ProgressEvent) -> bool:
        return event.stage == self.stage and self.text in event.message

    def _fire(self, event: ProgressEvent) -> None:
        self.fired = event
        self.token.cancel()
        self.token.raise_if_cancelled()


class CancelAtStart(CancelAt):
    """For stages reported only at their start (fraction 0)."""

    def __call__(self, event: ProgressEvent) -> None:
        self.events.append(event)
        if self.fired is None and self._matches(event) and event.fraction < 1:
            self._fire(event)


# (method, stage, message text, reported only at its start, the round of the checkpoint left:
# 0 for none)
ADAPT_STAGES = [
    ("lovecs", READING, "opening", True, 0),
    ("lovecs", STATISTICS, "source model's map", False, 0),
    ("lovecs", PSEUDO_LABELS, "round 1/2", False, 0),
    ("lovecs", TRAINING, "round 1/2", False, 0),
    ("lovecs", PSEUDO_LABELS, "round 2/2", False, 1),
    ("lovecs", STATISTICS, "health check", False, 2),
    ("lovecs", MAPPING, "tiles", False, 2),
    ("lovecs", WRITING, "overviews", True, 2),
    ("adabn", STATISTICS, "target windows", False, 0),
    ("adabn", RESAMPLING, "back to the input grid", False, 0),
]


@pytest.mark.parametrize(
    "method,stage,text,at_start,saved_round",
    ADAPT_STAGES,
    ids=[f"{m}-{s}-{t.split()[-1]}" for m, s, t, *_ in ADAPT_STAGES],
)
def test_cancel_during_adaptation_leaves_nothing_behind(
    adapt_inputs, method, stage, text, at_start, saved_round
):
    before = snapshot(adapt_inputs["in"])
    outputs = adapt_inputs["out"]
    cancel = (CancelAtStart if at_start else CancelAt)(stage, text)
    cfg = make_config(
        "fast",
        iterations=4,
        refresh_every=2,
        crop=32,
        pl_tile=32,
        batch_size=2,
        bn_windows=4,
        min_confidence=0,
        device="cpu",
    )
    with pytest.raises(Cancelled):
        adapt(
            adapt_inputs["model"],
            adapt_inputs["scene"],
            outputs / "adapted.lovecs",
            method=method,
            config=cfg,
            source_pairs=pair_rasters([adapt_inputs["images"]], [adapt_inputs["labels"]]),
            map_path=outputs / "map.tif",
            confidence_path=outputs / "confidence.tif",
            reporter=cancel.reporter,
        )
    assert cancel.fired is not None, [(e.stage, e.message) for e in cancel.events]
    left = sorted(p.name for p in outputs.iterdir())
    assert left == (["adapted.lovecs.ckpt"] if saved_round else [])
    assert temporary_files(adapt_inputs["out"].parent) == []
    assert snapshot(adapt_inputs["in"]) == before
    if saved_round:  # the checkpoint left is complete, of the last finished round
        state = torch.load(checkpoint_path(outputs / "adapted.lovecs"), weights_only=True)
        assert json.loads(state["progress"])["round"] == saved_round


# (stage, message text, reported only at its start)
PREDICT_STAGES = [
    (READING, "sensor alignment", True),
    (MAPPING, "tiles", False),
    (RESAMPLING, "back to the input grid", False),
    (RESAMPLING, "masking", False),
    (WRITING, "overviews", False),
]


@pytest.mark.parametrize(
    "stage,text,at_start",
    PREDICT_STAGES,
    ids=[f"{s}-{t.split()[-1]}" for s, t, _ in PREDICT_STAGES],
)
def test_cancel_during_mapping_leaves_nothing_behind(tmp_path: Path, stage, text, at_start):
    """A 300 px scene at 2 m for a 1 m model: mapped on the model's grid, resampled back, and
    large enough for overviews."""
    from .conftest import make_model

    inputs, outputs = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    outputs.mkdir()
    model = make_model(inputs, "good")
    rng = np.random.default_rng(0)
    scene = write_geotiff(
        inputs / "scene.tif", rng.integers(0, 255, (3, 300, 300)).astype(np.uint8), gsd=2.0
    )
    before = snapshot(inputs)
    cancel = (CancelAtStart if at_start else CancelAt)(stage, text)
    with pytest.raises(Cancelled):
        predict_raster(
            str(model),
            scene,
            outputs / "map.tif",
            device="cpu",
            confidence=outputs / "confidence.tif",
            reporter=cancel.reporter,
        )
    assert cancel.fired is not None, [(e.stage, e.message) for e in cancel.events]
    assert list(outputs.iterdir()) == []
    assert snapshot(inputs) == before

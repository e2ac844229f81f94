"""The Processing algorithms end to end, with the real engine in a child process: classify
(styled layer, confidence, cancel, band mismatch), train -> adapt -> evaluate."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import processing
import pytest
from osgeo import gdal
from qgis.core import (
    QgsApplication,
    QgsPalettedRasterRenderer,
    QgsProcessingAlgRunnerTask,
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingParameterDefinition,
    QgsProject,
    QgsRasterLayer,
)
from qgis.PyQt.QtCore import QTimer

from lovecs_core.model.card import read_card
from lovecs_qgis.algorithms import ClassifyAlgorithm, base, trainsource
from lovecs_qgis.algorithms import adapt as adapt_alg
from lovecs_qgis.styling import renderer_classes
from tests.core.helpers import CLASSES, tiny_model_file
from tests.core.synthetic import write_classes, write_source, write_target

from .conftest import wait_until


def read_array(path: Path) -> np.ndarray:
    ds = gdal.Open(str(path))
    return ds.GetRasterBand(1).ReadAsArray()


def test_classify_loads_a_styled_layer(lovecs_provider, qgis_data, scene_layer, tmp_path):
    out, conf = tmp_path / "landcover.tif", tmp_path / "confidence.tif"
    results = processing.runAndLoadResults(
        "lovecs:classify",
        {
            "INPUT": scene_layer,
            "MODEL": str(qgis_data / "tiny.lovecs"),
            "TILE_SIZE": 48,
            "OVERLAP": 8,
            "OUTPUT": str(out),
            "CONFIDENCE": str(conf),
        },
    )
    assert results["OUTPUT"] == str(out) and results["CONFIDENCE"] == str(conf)
    codes = read_array(out)
    assert codes.shape == (90, 110)
    assert set(np.unique(codes)) <= {1, 2, 3} and len(np.unique(codes)) >= 2
    confidence = read_array(conf)
    assert confidence.min() >= 33 and confidence.max() <= 100  # 3 classes: max prob >= 1/3
    assert out.with_suffix(".qml").is_file()
    loaded = [
        lyr
        for lyr in QgsProject.instance().mapLayers().values()
        if isinstance(lyr, QgsRasterLayer) and Path(lyr.source()) == out
    ]
    assert len(loaded) == 1
    layer = loaded[0]
    assert isinstance(layer.renderer(), QgsPalettedRasterRenderer)
    assert renderer_classes(layer) == CLASSES  # names and colours of the card
    assert layer.name() == "scene — land cover (LoveCS)"


def test_classify_with_processing_run_and_a_temporary_output(
    lovecs_provider, qgis_data, scene_layer
):
    results = processing.run(
        "lovecs:classify",
        {
            "INPUT": scene_layer,
            "MODEL": str(qgis_data / "tiny.lovecs"),
            "BANDS": "3,2,1",
            "DEVICE": "cpu",
            "OUTPUT": "TEMPORARY_OUTPUT",
        },
    )
    out = Path(results["OUTPUT"])
    assert out.is_file() and out.with_suffix(".qml").is_file()
    assert "CONFIDENCE" not in results or not results["CONFIDENCE"]
    ds = gdal.Open(str(out))
    assert ds.GetMetadataItem("LOVECS_TILE") == "64"  # the card's tile size
    assert ds.GetGeoTransform() == gdal.Open(str(scene_layer.source())).GetGeoTransform()


def test_classify_runs_in_a_background_task_without_blocking_qgis(
    lovecs_provider, qgis_data, scene_layer, tmp_path
):
    """As the toolbox runs it: a QgsProcessingAlgRunnerTask; the main thread's event loop keeps
    running while the engine works."""
    algorithm = QgsApplication.processingRegistry().createAlgorithmById("lovecs:classify")
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    feedback = QgsProcessingFeedback()
    out = tmp_path / "background.tif"
    task = QgsProcessingAlgRunnerTask(
        algorithm,
        {"INPUT": scene_layer, "MODEL": str(qgis_data / "tiny.lovecs"), "OUTPUT": str(out)},
        context,
        feedback,
    )
    finished: dict = {}
    task.executed.connect(lambda ok, results: finished.update(ok=ok, results=results))
    ticks: list[float] = []
    timer = QTimer()
    timer.timeout.connect(lambda: ticks.append(time.monotonic()))
    timer.start(50)
    QgsApplication.taskManager().addTask(task)
    wait_until(lambda: bool(finished), 120, "the task's end")
    timer.stop()
    assert finished["ok"] and finished["results"]["OUTPUT"] == str(out) and out.is_file()
    assert len(ticks) >= 10  # the run took a while (a child Python importing torch) ...
    assert max(np.diff(ticks)) < 1.0  # ... and the GUI thread never stalled


def test_band_mismatch_is_a_clear_error_before_any_work(
    lovecs_provider, qgis_data, scene_layer, tmp_path
):
    out = tmp_path / "never.tif"
    four = tiny_model_file(tmp_path / "four.lovecs", bands=4)  # (with fewer bands than the
    with pytest.raises(QgsProcessingException) as err:  # scene: the first ones, warned)
        processing.run(
            "lovecs:classify", {"INPUT": scene_layer, "MODEL": str(four), "OUTPUT": str(out)}
        )
    message = str(err.value)
    assert "expects 4 band(s)" in message and "3 band(s) of 'scene'" in message
    assert "e.g. 1,2,3,4" in message
    with pytest.raises(QgsProcessingException, match="band.* \\[5\\] do not exist"):
        processing.run(
            "lovecs:classify",
            {
                "INPUT": scene_layer,
                "BANDS": "1,5",
                "MODEL": str(qgis_data / "tiny2.lovecs"),
                "OUTPUT": str(out),
            },
        )
    assert not out.exists()


def test_engine_errors_reach_the_user(lovecs_provider, qgis_data, scene_layer, tmp_path):
    """An error found by the engine (here: an overlap the plugin accepts but the engine cannot
    use) comes back as the engine's own message."""
    with pytest.raises(QgsProcessingException, match="LoveCS predict: overlap must be between"):
        processing.run(
            "lovecs:classify",
            {
                "INPUT": scene_layer,
                "MODEL": str(qgis_data / "tiny.lovecs"),
                "TILE_SIZE": 32,
                "OVERLAP": 30,
                "OUTPUT": str(tmp_path / "x.tif"),
            },
        )
    bad_model = tmp_path / "bad.lovecs"
    bad_model.write_bytes(b"not a model")
    with pytest.raises(QgsProcessingException, match="not a LoveCS model file"):
        processing.run(
            "lovecs:classify",
            {"INPUT": scene_layer, "MODEL": str(bad_model), "OUTPUT": str(tmp_path / "x.tif")},
        )


class CancelOnMapping(QgsProcessingFeedback):
    """Cancels as soon as the engine reports that mapping started."""

    def __init__(self) -> None:
        super().__init__()
        self.texts: list[str] = []

    def setProgressText(self, text: str) -> None:  # noqa: N802
        self.texts.append(text)
        if text.startswith("mapping"):
            self.cancel()


def test_cancel_stops_the_engine_and_leaves_no_output(
    lovecs_provider, qgis_data, tmp_path, monkeypatch, qgis_new_project
):
    started: list[base.EngineProcess] = []

    class Recording(base.EngineProcess):
        def start(self) -> None:
            super().start()
            started.append(self)

    monkeypatch.setattr(base, "EngineProcess", Recording)
    big = QgsRasterLayer(str(qgis_data / "big.tif"), "big")
    out = tmp_path / "cancelled.tif"
    feedback = CancelOnMapping()
    t0 = time.monotonic()
    with pytest.raises(QgsProcessingException, match="cancelled"):
        processing.run(
            "lovecs:classify",
            {
                "INPUT": big,
                "MODEL": str(qgis_data / "tiny.lovecs"),
                "TILE_SIZE": 32,
                "OVERLAP": 8,
                "OUTPUT": str(out),
            },
            feedback=feedback,
        )
    assert any(t.startswith("mapping") for t in feedback.texts)
    assert len(started) == 1
    proc = started[0]
    assert proc.returncode == 130  # the engine stopped itself (SIGTERM -> cancel token)
    with pytest.raises(ProcessLookupError):
        os.killpg(proc.pid, 0)  # no process of the group is left
    leftovers = [p.name for p in tmp_path.iterdir()]
    assert leftovers == []  # neither the map nor a temporary file
    assert time.monotonic() - t0 < 60


def test_the_bundled_model_is_the_default(monkeypatch, qgis_data):
    from lovecs_qgis.algorithms import classify

    monkeypatch.setattr(classify, "default_model_path", lambda: qgis_data / "tiny.lovecs")
    for algorithm in (ClassifyAlgorithm(), adapt_alg.AdaptAlgorithm()):
        algorithm.initAlgorithm()
        assert algorithm.parameterDefinition("MODEL").defaultValue() == str(
            qgis_data / "tiny.lovecs"
        )
    monkeypatch.setattr(classify, "default_model_path", lambda: None)
    algorithm = ClassifyAlgorithm()
    algorithm.initAlgorithm()
    assert algorithm.parameterDefinition("MODEL").defaultValue() is None


def test_presets_and_methods_match_the_engine():
    from lovecs_core.contract import METHODS
    from lovecs_core.presets import PRESETS, TRAIN_PRESETS

    assert sorted(adapt_alg.METHODS) == sorted(METHODS)
    assert sorted(adapt_alg.PRESETS) == sorted(PRESETS)
    assert sorted(trainsource.PRESETS) == sorted(TRAIN_PRESETS)


def test_processing_and_the_cli_default_to_the_same_preset():
    """The benchmarked preset, wherever a user starts an adaptation (the dock reads it too)."""
    from lovecs_core.cli.main import build_parser
    from lovecs_core.contract import DEFAULT_ADAPT_PRESET

    algorithm = adapt_alg.AdaptAlgorithm()
    algorithm.initAlgorithm()
    assert algorithm.parameterDefinition("PRESET").defaultValue() == DEFAULT_ADAPT_PRESET == "fast"
    cli = build_parser().parse_args(["adapt", "--model", "m", "--target", "t", "--out", "o"])
    assert cli.preset == DEFAULT_ADAPT_PRESET


class LogFeedback(QgsProcessingFeedback):
    """Keeps everything an algorithm tells the user."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def pushInfo(self, info: str) -> None:  # noqa: N802
        self.lines.append(info)

    def pushWarning(self, warning: str) -> None:  # noqa: N802
        self.lines.append(warning)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def test_harmful_verdict_is_a_warning_that_names_the_safe_result():
    from lovecs_qgis.algorithms.adapt import report_health

    feedback = LogFeedback()
    health = {
        "verdict": "likely harmful",
        "agreement_confident": 0.4,
        "class_shift": 0.5,
        "confidence_before": 0.7,
        "confidence_after": 0.9,
        "class_confidence_before": 0.6,
        "class_confidence_after": 0.85,
        "reasons": ["building grew from 2 % to 60 % of the scene"],
    }
    verdict = report_health(
        {
            "health": health,
            "rejected": "/x/a.rejected.lovecs",
            "adaptation": {"alignment": {"summary": "10-bit values scaled"}},
        },
        feedback,
    )
    assert verdict == "likely harmful"
    assert "Sensor alignment: 10-bit values scaled" in feedback.text
    assert "the safe result" in feedback.text and "/x/a.rejected.lovecs" in feedback.text
    assert "building grew" in feedback.text and "KEEP_ADAPTED" in feedback.text
    assert "mean confidence 70 % -> 90 % (per class 60 % -> 85 %)" in feedback.text


def test_train_adapt_evaluate(lovecs_provider, tmp_path, qgis_new_project):
    images, labels = write_source(tmp_path / "src", n=2, size=64)
    scene, scene_labels = write_target(tmp_path / "tgt", size=64, gsd=2.0)
    classes = write_classes(tmp_path / "classes.json")
    model = tmp_path / "source.lovecs"
    trained = processing.run(
        "lovecs:trainsource",
        {
            "IMAGE_FOLDER": str(images),
            "LABEL_FOLDER": str(labels),
            "CLASSES": str(classes),
            "ARCH": "tiny",
            "ITERATIONS": 4,
            "BATCH_SIZE": 2,
            "CROP": 32,
            "DEVICE": "cpu",
            "NAME": "test source model",
            "OUTPUT": str(model),
        },
    )
    assert trained["OUTPUT"] == str(model) and trained["FINAL_LOSS"] > 0
    card = read_card(model)
    assert card.name == "test source model" and card.classes == CLASSES

    scene_layer = QgsRasterLayer(str(scene), "target scene")
    adapted, out = tmp_path / "adapted.lovecs", tmp_path / "adapted.tif"
    context = QgsProcessingContext()
    context.setProject(QgsProject.instance())
    feedback = LogFeedback()
    result = processing.runAndLoadResults(
        "lovecs:adapt",
        {
            "INPUT": scene_layer,
            "MODEL": str(model),
            "METHOD": "lovecs",
            "PRESET": "fast",
            "ITERATIONS": 2,
            "BATCH_SIZE": 1,
            "CROP": 32,
            "DEVICE": "cpu",
            "OUTPUT_MODEL": str(adapted),
            "OUTPUT": str(out),
        },
        context=context,
        feedback=feedback,
    )
    assert result["OUTPUT_MODEL"] == str(adapted) and result["OUTPUT"] == str(out)
    # the verdict: an output, in the Processing log, and in the model card
    verdict = read_card(adapted).adaptation["health"]["verdict"]
    assert result["VERDICT"] == verdict
    assert f"Health check: {verdict}" in feedback.text and "Sensor alignment:" in feedback.text
    assert read_card(adapted).adaptation["method"] == "lovecs"
    assert read_array(out).shape == (64, 64)
    layer = [
        lyr for lyr in QgsProject.instance().mapLayers().values() if Path(lyr.source()) == out
    ][0]
    assert renderer_classes(layer) == CLASSES
    assert layer.name() == "target scene — land cover (LoveCS)"

    report = tmp_path / "report.html"
    scores = processing.run(
        "lovecs:evaluate",
        {
            "PREDICTION": str(out),
            "LABELS": str(scene_labels),
            "CLASSES": str(classes),
            "OUTPUT_HTML": str(report),
            "OUTPUT_JSON": str(tmp_path / "scores.json"),
        },
    )
    for key in ("MIOU", "OA", "KAPPA"):
        assert isinstance(scores[key], float)
    assert 0 <= scores["MIOU"] <= 1 and 0 <= scores["OA"] <= 1
    pred, ref = read_array(out), read_array(scene_labels)
    labelled = ref > 0
    assert scores["OA"] == pytest.approx(float((pred[labelled] == ref[labelled]).mean()))
    text = report.read_text()
    assert "building" in text and "Confusion matrix" in text
    assert f"{100 * scores['MIOU']:.1f}" in text
    assert (tmp_path / "scores.json").is_file()


def test_tone_step_is_an_advanced_setting_handed_to_the_engine(
    lovecs_provider, qgis_data, scene_layer, tmp_path
):
    """TONE (auto by default) reaches the engine: a gamma given is applied and recorded in the
    map's metadata; a bad value is the engine's own clear error."""
    for name in ("classify", "adapt"):
        algorithm = QgsApplication.processingRegistry().algorithmById(f"lovecs:{name}")
        param = algorithm.parameterDefinition("TONE")
        assert param.defaultValue() == "auto"
        assert param.flags() & QgsProcessingParameterDefinition.FlagAdvanced
    common = {"INPUT": scene_layer, "MODEL": str(qgis_data / "tiny.lovecs"), "DEVICE": "cpu"}
    out = tmp_path / "toned.tif"
    processing.run("lovecs:classify", {**common, "TONE": "0.7", "OUTPUT": str(out)})
    assert "gamma 0.7" in gdal.Open(str(out)).GetMetadataItem("LOVECS_ALIGNMENT")
    plain = tmp_path / "plain.tif"
    processing.run("lovecs:classify", {**common, "OUTPUT": str(plain)})
    assert "gamma" not in gdal.Open(str(plain)).GetMetadataItem("LOVECS_ALIGNMENT")
    with pytest.raises(QgsProcessingException, match="tone must be auto, off or a gamma"):
        processing.run("lovecs:classify", {**common, "TONE": "bright", "OUTPUT": str(plain)})

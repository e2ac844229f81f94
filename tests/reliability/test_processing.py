"""Bad inputs through Processing (``processing.run``), as the toolbox, models and scripts run the
algorithms: refused with a QgsProcessingException naming the problem (before the engine starts
where QGIS can tell), warnings in the feedback, nothing written beside the input."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import processing
import pytest
from osgeo import gdal
from qgis.core import QgsProcessingContext, QgsProcessingException, QgsProcessingFeedback

from lovecs_qgis.algorithms import base
from tests.core.helpers import tiny_model_file, write_geotiff
from tests.qgis.conftest import lovecs_provider  # noqa: F401  (fixture)

from .conftest import make_model, make_raster, snapshot, temporary_files


class Recorder(QgsProcessingFeedback):
    """Keeps every line the algorithm shows the user."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[tuple[str, str]] = []
        self.on_text = None

    def pushWarning(self, text: str) -> None:  # noqa: N802
        self.lines.append(("warning", text))
        super().pushWarning(text)

    def pushInfo(self, text: str) -> None:  # noqa: N802
        self.lines.append(("info", text))

    def pushConsoleInfo(self, text: str) -> None:  # noqa: N802
        self.lines.append(("console", text))

    def reportError(self, text: str, fatalError: bool = False) -> None:  # noqa: N802, N803
        self.lines.append(("error", text))

    def setProgressText(self, text: str) -> None:  # noqa: N802
        self.lines.append(("progress", text))
        if self.on_text is not None:
            self.on_text(text)

    def text(self, kind: str | None = None) -> str:
        return "\n".join(t for k, t in self.lines if kind is None or k == kind)


@pytest.fixture
def no_engine(monkeypatch):
    """Fail the test if the engine process is started (the case must be refused before)."""

    class NoEngine(base.EngineProcess):
        def start(self) -> None:
            raise AssertionError("the engine was started")

    monkeypatch.setattr(base, "EngineProcess", NoEngine)


def test_adapt_output_model_equal_to_model_is_refused(lovecs_provider, tmp_path, no_engine):
    model = make_model(tmp_path, "good")
    scene = make_raster(tmp_path, "good")
    before = snapshot(tmp_path)
    with pytest.raises(
        QgsProcessingException, match="the adapted model would overwrite the source model"
    ):
        processing.run(
            "lovecs:adapt",
            {
                "INPUT": str(scene),
                "MODEL": str(model),
                "OUTPUT_MODEL": str(model),
                "OUTPUT": str(tmp_path / "map.tif"),
            },
        )
    assert snapshot(tmp_path) == before


def test_adapt_map_equal_to_the_scene_is_refused(lovecs_provider, tmp_path, no_engine):
    model = make_model(tmp_path, "good")
    scene = make_raster(tmp_path, "good")
    before = snapshot(tmp_path)
    with pytest.raises(QgsProcessingException, match="the map would overwrite the target scene"):
        processing.run(
            "lovecs:adapt",
            {
                "INPUT": str(scene),
                "MODEL": str(model),
                "OUTPUT_MODEL": str(tmp_path / "a.lovecs"),
                "OUTPUT": str(scene),
            },
        )
    assert snapshot(tmp_path) == before


def test_adapt_card_with_tile_size_zero_is_refused(lovecs_provider, tmp_path, no_engine):
    model = make_model(tmp_path, "tile_zero")
    with pytest.raises(QgsProcessingException, match="'tile.size' must be a whole number"):
        processing.run(
            "lovecs:adapt",
            {
                "INPUT": str(make_raster(tmp_path, "good")),
                "MODEL": str(model),
                "OUTPUT_MODEL": str(tmp_path / "a.lovecs"),
                "OUTPUT": str(tmp_path / "map.tif"),
            },
        )


@pytest.mark.parametrize(
    "kind,text",
    [
        ("text_stats", "normalization.source.mean must hold numbers, found 'a lot'"),
        ("wide_network", "architecture.width must be a whole number 1..1024, found 40000"),
        ("future_version", "unsupported 'format_version' 99"),
    ],
)
def test_crafted_model_cards_are_clear_errors(lovecs_provider, tmp_path, no_engine, kind, text):
    with pytest.raises(QgsProcessingException) as err:
        processing.run(
            "lovecs:classify",
            {
                "INPUT": str(make_raster(tmp_path, "good")),
                "MODEL": str(make_model(tmp_path, kind)),
                "OUTPUT": str(tmp_path / "map.tif"),
            },
        )
    assert text in str(err.value)


def test_raster_without_georeference(lovecs_provider, tmp_path, monkeypatch):
    model = make_model(tmp_path, "good")
    raster = make_raster(tmp_path, "no_geotransform")
    out = tmp_path / "map.tif"
    started: list = []

    class Recording(base.EngineProcess):
        def start(self) -> None:
            started.append(self)
            super().start()

    monkeypatch.setattr(base, "EngineProcess", Recording)
    with pytest.raises(QgsProcessingException) as err:
        processing.run(
            "lovecs:classify", {"INPUT": str(raster), "MODEL": str(model), "OUTPUT": str(out)}
        )
    message = str(err.value)
    assert "no geotransform, so its pixel size is unknown" in message
    assert "NO_RESAMPLE=true" in message and not started and not out.exists()
    processing.run(
        "lovecs:classify",
        {
            "INPUT": str(raster),
            "MODEL": str(model),
            "NO_RESAMPLE": True,
            "DEVICE": "cpu",
            "OUTPUT": str(out),
        },
    )
    assert gdal.Open(str(out)).RasterXSize == 40


def test_four_untagged_bands_use_the_first_three_and_say_so(lovecs_provider, tmp_path):
    feedback = Recorder()
    out = tmp_path / "map.tif"
    processing.run(
        "lovecs:classify",
        {
            "INPUT": str(make_raster(tmp_path, "four_bands_untagged")),
            "MODEL": str(make_model(tmp_path, "good")),
            "DEVICE": "cpu",
            "OUTPUT": str(out),
        },
        feedback=feedback,
    )
    assert "using the first 3, bands 1,2,3" in feedback.text("warning")
    assert out.is_file()


def test_input_of_another_data_type_is_a_warning(lovecs_provider, tmp_path):
    feedback = Recorder()
    out = tmp_path / "map.tif"
    processing.run(
        "lovecs:classify",
        {
            "INPUT": str(make_raster(tmp_path, "uint16_12bit")),
            "MODEL": str(make_model(tmp_path, "good")),
            "DEVICE": "cpu",
            "OUTPUT": str(out),
        },
        feedback=feedback,
    )
    assert "holds uint16 values but the model was made for uint8" in feedback.text("warning")
    assert out.is_file()


def test_float_input_with_nan_writes_no_statistics_beside_it_and_no_gdal_noise(
    lovecs_provider, tmp_path, capfd
):
    inputs = tmp_path / "in"
    inputs.mkdir()
    raster = write_geotiff(
        inputs / "float.tif",
        np.where(
            np.random.default_rng(0).random((3, 120, 120)) < 0.05,
            np.nan,
            np.random.default_rng(1).uniform(0, 255, (3, 120, 120)),
        ).astype(np.float64),
    )
    ds = gdal.Open(str(raster), gdal.GA_Update)
    ds.GetRasterBand(2).WriteArray(np.full((4, 4), np.inf), 0, 0)
    ds = None
    before = snapshot(inputs)
    out = tmp_path / "map.tif"
    context = QgsProcessingContext()
    processing.run(
        "lovecs:classify",
        {
            "INPUT": str(raster),
            "MODEL": str(make_model(tmp_path, "good")),
            "DEVICE": "cpu",
            "OUTPUT": str(out),
        },
        context=context,
    )
    del context  # the temporary layer is closed: GDAL would write its .aux.xml now
    assert snapshot(inputs) == before
    assert "ERROR 5" not in capfd.readouterr().err


def test_model_file_with_another_suffix_names_the_parameter(lovecs_provider, tmp_path):
    from qgis.core import QgsApplication

    model = make_model(tmp_path, "good").rename(tmp_path / "model.bin")
    algorithm = QgsApplication.processingRegistry().createAlgorithmById("lovecs:classify")
    ok, message = algorithm.checkParameterValues(
        {
            "INPUT": str(make_raster(tmp_path, "good")),
            "MODEL": str(model),
            "OUTPUT": str(tmp_path / "m.tif"),
        },
        QgsProcessingContext(),
    )
    assert not ok
    assert message.startswith("MODEL (Land-cover model): ") and "is not a .lovecs file" in message


def test_engine_errors_are_shown_once(lovecs_provider, tmp_path):
    """An error only the engine finds: the feedback's console does not repeat the message that
    the exception carries."""
    feedback = Recorder()
    with pytest.raises(QgsProcessingException, match="overlap must be between") as err:
        processing.run(
            "lovecs:classify",
            {
                "INPUT": str(make_raster(tmp_path, "good")),
                "MODEL": str(make_model(tmp_path, "good")),
                "TILE_SIZE": 32,
                "OVERLAP": 30,
                "DEVICE": "cpu",
                "OUTPUT": str(tmp_path / "m.tif"),
            },
            feedback=feedback,
        )
    assert str(err.value).count("overlap must be between") == 1
    assert "overlap must be between" not in feedback.text()
    assert list(p.name for p in tmp_path.iterdir() if p.suffix == ".tif") == ["good.tif"]


def test_engine_killed_from_outside_during_a_resampled_run(lovecs_provider, tmp_path, monkeypatch):
    """SIGKILL from outside (an OOM killer) while the model's grid is being mapped: a failure
    within seconds, never a hang, and none of the resampled run's hidden files left."""
    model = tiny_model_file(tmp_path / "m.lovecs", gsd=1.0)
    raster = write_geotiff(
        tmp_path / "coarse.tif",
        np.random.default_rng(0).integers(0, 255, (3, 200, 200)).astype(np.uint8),
        gsd=2.0,
    )
    outputs = tmp_path / "out"
    outputs.mkdir()
    started: list = []

    class Recording(base.EngineProcess):
        def start(self) -> None:
            super().start()
            started.append(self)

    monkeypatch.setattr(base, "EngineProcess", Recording)
    feedback = Recorder()
    seen: list[list[str]] = []

    def kill_on_mapping(text: str) -> None:
        if text.startswith("mapping") and not seen:
            deadline = time.monotonic() + 10
            while not seen and time.monotonic() < deadline:  # the stage file is there
                names = [p.name for p in outputs.iterdir() if "model-grid" in p.name]
                if names:
                    seen.append(names)
                time.sleep(0.02)
            os.kill(started[0].pid, signal.SIGKILL)

    feedback.on_text = kill_on_mapping
    t0 = time.monotonic()
    with pytest.raises(QgsProcessingException, match="killed by SIGKILL"):
        processing.run(
            "lovecs:classify",
            {
                "INPUT": str(raster),
                "MODEL": str(model),
                "TILE_SIZE": 32,
                "OVERLAP": 8,
                "DEVICE": "cpu",
                "OUTPUT": str(outputs / "map.tif"),
            },
            feedback=feedback,
        )
    assert time.monotonic() - t0 < 60
    assert seen and seen[0]  # the run was killed with its hidden files in place ...
    assert list(outputs.iterdir()) == []  # ... and they were swept up
    assert temporary_files(tmp_path) == []

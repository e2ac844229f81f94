"""Smoke test: the packaged plugin under ``qgis_process`` (headless QGIS), as a user runs it.

On Debian the ``qgis_process`` wrapper script is broken; ``qgis_process.bin`` is the program.
Everything QGIS writes (profile, temporary files) stays inside the checkout's ``.tmp``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
QGIS_PROCESS = shutil.which("qgis_process.bin")

pytestmark = pytest.mark.skipif(
    QGIS_PROCESS is None, reason="qgis_process.bin not found (apt install qgis)"
)


@pytest.fixture(scope="module")
def qgis_process(tmp_path_factory):
    """A function running ``qgis_process.bin ARGS`` with the dev plugin folder (built like
    ``make plugin-dev``) and a private QGIS profile; returns the CompletedProcess."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from package_plugin import build_dir
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    base = tmp_path_factory.mktemp("qgis_process")
    plugins = base / "plugins"
    build_dir(plugins, engine_python=sys.executable)
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "LOVECS_PYTHON", "QGIS_PLUGINPATH")
    }
    env.update(
        QT_QPA_PLATFORM="offscreen",
        QGIS_PLUGINPATH=str(plugins),
        QGIS_CUSTOM_CONFIG_PATH=str(base / "profile"),
        TMPDIR=str(base),
        XDG_RUNTIME_DIR=str(base / "runtime"),
    )
    (base / "runtime").mkdir(mode=0o700)

    def run(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [QGIS_PROCESS, *args],
            env=env,
            cwd=str(base),
            text=True,
            capture_output=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    run("plugins", "enable", "lovecs_qgis")  # qgis_process loads enabled plugins only
    return run


def test_classify_with_qgis_process(qgis_process, tmp_path):
    from osgeo import gdal

    from lovecs_core.rasters.qml import read_qml_classes
    from tests.core.helpers import CLASSES, tiny_model_file, write_geotiff

    model = tiny_model_file(tmp_path / "tiny model.lovecs")  # a space, as users' paths have
    raster = write_geotiff(
        tmp_path / "scene.tif",
        np.random.default_rng(3).integers(0, 255, (3, 70, 80)).astype(np.uint8),
    )
    out = tmp_path / "land cover.tif"
    proc = qgis_process(
        "run",
        "lovecs:classify",
        "--",
        f"INPUT={raster}",
        f"MODEL={model}",
        "DEVICE=cpu",
        f"OUTPUT={out}",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "LoveCS predict finished" in proc.stdout
    ds = gdal.Open(str(out))
    assert (ds.RasterXSize, ds.RasterYSize) == (80, 70)
    codes = ds.GetRasterBand(1).ReadAsArray()
    assert set(np.unique(codes)) <= {1, 2, 3}
    assert read_qml_classes(out.with_suffix(".qml")) == CLASSES


def test_qgis_process_reports_a_band_mismatch(qgis_process, tmp_path):
    from tests.core.helpers import tiny_model_file, write_geotiff

    model = tiny_model_file(tmp_path / "four.lovecs", bands=4)
    raster = write_geotiff(tmp_path / "rgb.tif", np.zeros((3, 20, 20), np.uint8))
    out = tmp_path / "never.tif"
    proc = qgis_process(
        "run", "lovecs:classify", "--", f"INPUT={raster}", f"MODEL={model}", f"OUTPUT={out}"
    )
    assert proc.returncode != 0
    assert "expects 4 band(s)" in proc.stdout + proc.stderr
    assert not out.exists()


def test_train_adapt_evaluate_chain_with_qgis_process(qgis_process, tmp_path):
    """The three adaptation algorithms run headless, one feeding the next, as a batch script does."""
    from lovecs_core.model.card import read_card
    from tests.core.synthetic import write_classes, write_source, write_target

    images, labels = write_source(tmp_path / "src", n=2, size=96)
    scene, scene_labels = write_target(tmp_path / "tgt", size=96)
    classes = write_classes(tmp_path / "classes.json")
    source = tmp_path / "source.lovecs"
    proc = qgis_process(
        "run",
        "lovecs:trainsource",
        "--",
        f"IMAGE_FOLDER={images}",
        f"LABEL_FOLDER={labels}",
        f"CLASSES={classes}",
        "ARCH=tiny",
        "ITERATIONS=8",
        "BATCH_SIZE=2",
        "CROP=48",
        "DEVICE=cpu",
        f"OUTPUT={source}",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    adapted, landcover = tmp_path / "adapted.lovecs", tmp_path / "landcover.tif"
    proc = qgis_process(
        "run",
        "lovecs:adapt",
        "--",
        f"INPUT={scene}",
        f"MODEL={source}",
        "METHOD=lovecs",
        "PRESET=fast",
        "ITERATIONS=4",
        "DEVICE=cpu",
        f"OUTPUT_MODEL={adapted}",
        f"OUTPUT={landcover}",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert read_card(adapted).adaptation["method"] == "lovecs"
    report = tmp_path / "report.html"
    proc = qgis_process(
        "run",
        "lovecs:evaluate",
        "--",
        f"PREDICTION={landcover}",
        f"LABELS={scene_labels}",
        f"OUTPUT_HTML={report}",
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "MIOU" in proc.stdout and "KAPPA" in proc.stdout
    assert "IoU" in report.read_text()

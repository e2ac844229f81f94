"""Layers that are not files (here a local ``file://`` XYZ tile pyramid, built in the test) are
rendered over the chosen extent at the chosen pixel size into a georeferenced GeoTIFF and mapped,
through Processing and through the dock's input function."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal
from qgis.core import QgsApplication, QgsProject, QgsRasterLayer, QgsRectangle, QgsTask

from lovecs_qgis.layer_render import MAX_RENDER_PIXELS, RenderError, map_input
from lovecs_qgis.view_extent import canvas_extent_in_layer_crs

from .conftest import wait_until

HALF = 20037508.342789244  # half the Web Mercator world, metres
ZOOM = 16
LON, LAT = 8.5, 47.4


def tile_xy(lon: float, lat: float, z: int) -> tuple[int, int]:
    n = 2**z
    y = (1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n
    return int((lon + 180) / 360 * n), int(y)


def tile_bounds(x: int, y: int, z: int) -> tuple[float, float, float, float]:
    size = 2 * HALF / 2**z
    return -HALF + x * size, HALF - (y + 1) * size, -HALF + (x + 1) * size, HALF - y * size


@pytest.fixture
def xyz_layer(tmp_path: Path, qgis_new_project) -> QgsRasterLayer:
    """2 x 2 PNG tiles at zoom 16 near Zurich: each tile its own colour, with a gradient."""
    x0, y0 = tile_xy(LON, LAT, ZOOM)
    ramp = np.tile(np.arange(256, dtype=np.uint8) // 4, (256, 1))
    for dx in range(2):
        for dy in range(2):
            folder = tmp_path / "tiles" / str(ZOOM) / str(x0 + dx)
            folder.mkdir(parents=True, exist_ok=True)
            mem = gdal.GetDriverByName("MEM").Create("", 256, 256, 3, gdal.GDT_Byte)
            for b in range(3):
                mem.GetRasterBand(b + 1).WriteArray(ramp + 60 * dx + 30 * dy + 50 * b)
            gdal.GetDriverByName("PNG").CreateCopy(str(folder / f"{y0 + dy}.png"), mem)
    url = f"file://{tmp_path}/tiles/{{z}}/{{x}}/{{y}}.png"
    layer = QgsRasterLayer(f"type=xyz&url={url}&zmax={ZOOM}&zmin={ZOOM}", "tiles", "wms")
    assert layer.isValid(), layer.error().message()
    QgsProject.instance().addMapLayer(layer)
    return layer


def inner_extent(margin: float = 150.0) -> QgsRectangle:
    """An extent inside the four tiles (EPSG:3857)."""
    x0, y0 = tile_xy(LON, LAT, ZOOM)
    xmin, _, _, ymax = tile_bounds(x0, y0, ZOOM)
    _, ymin, xmax, _ = tile_bounds(x0 + 1, y0 + 1, ZOOM)
    return QgsRectangle(xmin + margin, ymin + margin * 1.5, xmax - margin * 2, ymax - margin)


def assert_covers(path: Path, extent: QgsRectangle, bands: int) -> np.ndarray:
    """``path`` is in EPSG:3857, north up, and covers ``extent`` to within a pixel."""
    ds = gdal.Open(str(path))
    assert ds is not None and ds.RasterCount == bands
    assert "3857" in ds.GetSpatialRef().GetAuthorityCode(None)
    x0, px, rx, y1, ry, py = ds.GetGeoTransform()
    assert rx == ry == 0 and px > 0 > py
    x1, y0 = x0 + px * ds.RasterXSize, y1 + py * ds.RasterYSize
    assert abs(x0 - extent.xMinimum()) < px and abs(x1 - extent.xMaximum()) < px
    assert abs(y1 - extent.yMaximum()) < -py and abs(y0 - extent.yMinimum()) < -py
    return ds.ReadAsArray()


def test_an_xyz_layer_is_rendered_over_the_extent_at_the_gsd(xyz_layer, tmp_path: Path):
    extent = inner_extent()
    source = map_input(xyz_layer, extent, 2.0, tmp_path / "out")
    assert source.rendered and source.raster == str(tmp_path / "out" / "tiles_render.tif")
    assert source.extent_args == [] and source.layer.isValid()
    data = assert_covers(Path(source.raster), extent, bands=4)
    ds = gdal.Open(source.raster)
    px = ds.GetGeoTransform()[1]
    assert px * math.cos(math.radians(LAT)) == pytest.approx(2.0, rel=1e-3)  # 2 m on the ground
    interp = [ds.GetRasterBand(b).GetColorInterpretation() for b in (1, 2, 3, 4)]
    assert interp == [gdal.GCI_RedBand, gdal.GCI_GreenBand, gdal.GCI_BlueBand, gdal.GCI_AlphaBand]
    assert (data[3] == 255).all()  # inside the tiles: no hole
    assert len(np.unique(data[0])) > 20 and data[:3].std() > 10  # the tiles, not a blank image


def test_an_unbounded_request_is_refused_before_any_file(xyz_layer, tmp_path: Path):
    with pytest.raises(RenderError, match="a run may render"):
        map_input(xyz_layer, None, 1.0, tmp_path / "out")  # the whole world at 1 m
    assert not (tmp_path / "out").exists()
    assert MAX_RENDER_PIXELS >= 10_000_000


def test_a_file_layer_is_read_as_it_is_with_an_extent(scene_layer, tmp_path: Path):
    whole = map_input(scene_layer, None, 1.0, tmp_path)
    assert whole.raster == scene_layer.source() and whole.extent_args == []
    part = map_input(scene_layer, QgsRectangle(500010, 2799950, 500040, 2799980), 1.0, tmp_path)
    assert part.extent_args == ["--extent", "500010.0,2799950.0,500040.0,2799980.0"]
    assert not part.rendered and list(tmp_path.iterdir()) == []


def test_processing_maps_an_xyz_layer(lovecs_provider, qgis_data, xyz_layer, tmp_path: Path):
    import processing

    extent = inner_extent(margin=300.0)
    out = tmp_path / "map.tif"
    text = f"{extent.xMinimum()},{extent.xMaximum()},{extent.yMinimum()},{extent.yMaximum()}"
    params = {"INPUT": xyz_layer, "MODEL": str(qgis_data / "tiny.lovecs"), "DEVICE": "cpu"}
    params.update(BANDS="1,2,3", EXTENT=f"{text} [EPSG:3857]", OUTPUT=str(out))
    results = processing.run("lovecs:classify", params)
    assert results["OUTPUT"] == str(out)
    classes = assert_covers(out, extent, bands=1)
    assert (classes > 0).all()  # every pixel mapped (tiny model: 1 m pixels)
    assert_covers(tmp_path / "tiles_render.tif", extent, bands=4)


def test_processing_maps_part_of_a_file_layer(lovecs_provider, qgis_data, scene_layer, tmp_path):
    """EXTENT in another CRS (EPSG:4326) on a file layer: the engine's --extent, no copy."""
    import processing

    out = tmp_path / "part.tif"
    lon_lat = "57.00005,57.0002,25.31625,25.3164 [EPSG:4326]"  # the scene starts at 57 E, 25.3 N
    params = {"INPUT": scene_layer, "MODEL": str(qgis_data / "tiny.lovecs"), "DEVICE": "cpu"}
    processing.run("lovecs:classify", {**params, "EXTENT": lon_lat, "OUTPUT": str(out)})
    ds = gdal.Open(str(out))
    x0, _, _, y1, _, _ = ds.GetGeoTransform()
    assert 500004 <= x0 <= 500005 and 2799983 <= y1 <= 2799985
    assert 14 <= ds.RasterXSize <= 17 and 16 <= ds.RasterYSize <= 19
    assert not [p for p in tmp_path.iterdir() if p.suffix in (".vrt", ".tif") and p != out]


def test_processing_asks_for_an_extent_for_an_xyz_layer(lovecs_provider, qgis_data, xyz_layer):
    import processing
    from qgis.core import QgsProcessingException

    params = {"INPUT": xyz_layer, "MODEL": str(qgis_data / "tiny.lovecs"), "DEVICE": "cpu"}
    with pytest.raises(QgsProcessingException, match="smaller area"):
        processing.run("lovecs:classify", {**params, "OUTPUT": "TEMPORARY_OUTPUT"})


def view_dock(qgis_iface, qgis_data: Path, tmp_path: Path, layer: QgsRasterLayer, view):
    """A dock on ``layer`` mapping the map view, the canvas showing ``view`` (layer CRS)."""
    from lovecs_qgis.dock import LoveCSDock

    dock = LoveCSDock(qgis_iface)
    dock.model_widget.setFilePath(str(qgis_data / "tiny.lovecs"))
    dock.output_widget.setFilePath(str(tmp_path / "out"))
    dock.layer_combo.setLayer(layer)
    canvas = qgis_iface.mapCanvas()
    canvas.setDestinationCrs(layer.crs())
    canvas.setExtent(view)
    dock.area_combo.setCurrentIndex(1)
    return dock


def test_the_dock_sends_the_view_as_an_extent(qgis_iface, qgis_data, scene_layer, tmp_path):
    view = QgsRectangle(500010, 2799950, 500060, 2799980)
    dock = view_dock(qgis_iface, qgis_data, tmp_path, scene_layer, view)
    job = dock.prepare("adapt")
    assert job is not None, dock.log_view.toPlainText()
    assert job.args[job.args.index("--target") + 1] == scene_layer.source()
    sent = [float(v) for v in job.args[job.args.index("--extent") + 1].split(",")]
    shown = canvas_extent_in_layer_crs(qgis_iface, scene_layer)
    assert sent == [shown.xMinimum(), shown.yMinimum(), shown.xMaximum(), shown.yMaximum()]
    assert not list(tmp_path.rglob("*.vrt"))  # the engine clips; the dock writes no VRT
    dock.area_combo.setCurrentIndex(0)
    assert "--extent" not in dock.prepare("predict").args


def test_the_dock_maps_an_xyz_layer_over_the_view(qgis_iface, qgis_data, xyz_layer, tmp_path):
    dock = view_dock(qgis_iface, qgis_data, tmp_path, xyz_layer, inner_extent(margin=300.0))
    job = dock.prepare("predict")
    assert job is not None, dock.log_view.toPlainText()
    raster = Path(job.args[job.args.index("--raster") + 1])
    assert raster == tmp_path / "out" / "tiles_render.tif" and "--extent" not in job.args
    data = assert_covers(raster, canvas_extent_in_layer_crs(qgis_iface, xyz_layer), bands=4)
    assert data[:3].std() > 10
    dock.area_combo.setCurrentIndex(0)  # the whole world: refused, with what to do
    assert dock.prepare("predict") is None
    assert "a run may render" in dock.log_view.toPlainText()


def test_the_dock_renders_a_web_layer_in_the_background_then_maps_it(
    qgis_iface, qgis_data, xyz_layer, tmp_path
):
    from lovecs_qgis.events import Status

    dock = view_dock(qgis_iface, qgis_data, tmp_path, xyz_layer, inner_extent(margin=300.0))
    assert dock.start("predict") is None  # the render first, in a task: QGIS stays free
    assert dock.render is not None and dock.task is None
    assert "Rendering 'tiles'" in dock.stage_label.text()
    assert dock.cancel_button.isEnabled() and not dock.classify_button.isEnabled()
    wait_until(lambda: dock.render is None, timeout=60, what="the render")
    assert dock.task is not None, dock.log_view.toPlainText()
    raster = Path(dock.job.args[dock.job.args.index("--raster") + 1])
    assert raster == tmp_path / "out" / "tiles_render.tif"
    assert_covers(raster, canvas_extent_in_layer_crs(qgis_iface, xyz_layer), bands=4)
    outcomes: list = []
    dock.task.done.connect(outcomes.append)
    wait_until(lambda: bool(outcomes), timeout=300, what="the map")
    assert outcomes[0].status is Status.SUCCESS, outcomes[0].error
    assert "as rendered to" in dock.log_view.toPlainText()


def test_cancelling_the_render_leaves_no_file_and_frees_the_dock(
    qgis_iface, qgis_data, xyz_layer, tmp_path
):
    manager = QgsApplication.taskManager()
    hold = lambda task_id: manager.task(task_id).hold()  # noqa: E731 (the render waits for us)
    manager.taskAdded.connect(hold)
    dock = view_dock(qgis_iface, qgis_data, tmp_path, xyz_layer, inner_extent(margin=300.0))
    try:
        assert dock.start("predict") is None and dock.render is not None
    finally:
        manager.taskAdded.disconnect(hold)
    assert dock.render.task.status() == QgsTask.OnHold
    dock.cancel()
    wait_until(lambda: dock.render is None, timeout=60, what="the cancelled render")
    assert dock.task is None and "cancelled" in dock.stage_label.text()
    assert not list((tmp_path / "out").glob("tiles_render*.tif"))
    assert dock.classify_button.isEnabled() and not dock.cancel_button.isEnabled()

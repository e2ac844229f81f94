import json
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from osgeo import gdal, osr

from lovecs_core.alignment.normalize import normalize
from lovecs_core.cli.main import main
from lovecs_core.mapping.predict import predict_raster, tile_settings
from lovecs_core.mapping.tiling import make_grid
from lovecs_core.model.card import ModelCard, save_model
from lovecs_core.model.csn import CrossSensorNorm
from lovecs_core.model.networks import architecture, build_model, model_from_file
from lovecs_core.progress import Cancelled, CancelToken, Reporter
from lovecs_core.rasters.reading import RasterError, RasterReader, Window
from tests.core.helpers import CLASSES, tiny_card, tiny_model_file, write_geotiff

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def read(path: Path) -> np.ndarray:
    ds = gdal.Open(str(path))
    return ds.ReadAsArray()


def band1_model(path: Path, bands: int = 3, gsd=None, band: int = 0, **card_kw) -> Path:
    """A 1x1-conv model that looks at one input band only: class 1 (building) where that band
    is above the card mean (100), class 2 (road) below."""
    card = ModelCard(
        architecture=architecture("tiny", csn=False, width=8, depth=0),
        classes=CLASSES[:2],
        band_names=[f"b{i + 1}" for i in range(bands)],
        normalization={"source": {"mean": [100.0] * bands, "std": [50.0] * bands}},
        gsd=gsd,
        tile_size=64,
        overlap=16,
        **card_kw,
    )
    net = build_model(card)
    conv = net.body[0]
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.zero_()
        conv.weight[0, band] = 5.0
        conv.weight[1, band] = -5.0
    return save_model(path, card, net.state_dict())


def leftovers(folder: Path, keep: set[str]) -> list[str]:
    """Files in ``folder`` besides ``keep`` (which must all still be there)."""
    names = {p.name for p in folder.iterdir()}
    assert keep <= names, f"missing {keep - names}"
    return sorted(names - keep)


def lovecs_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("lovecs-")]


# -- seams, tiling, nodata ----------------------------------------------------------------------


def test_output_is_seam_free_and_does_not_depend_on_tiling(tmp_path: Path):
    rng = np.random.default_rng(1)
    data = rng.integers(1, 256, (3, 150, 170)).astype(np.uint8)
    raster = write_geotiff(tmp_path / "r.tif", data)
    model_path = tiny_model_file(tmp_path / "m.lovecs", seed=3)  # receptive field 5 px
    card, net = model_from_file(str(model_path))
    with torch.no_grad():  # the whole raster in one forward pass: the seam-free truth
        x = torch.from_numpy(normalize(data, *card.stats("source")))[None]
        truth = torch.softmax(net(x), 1)[0].numpy()
    codes = np.array(card.class_codes())[truth.argmax(0)]

    for tile, overlap in [(64, 16), (40, 8), (56, 5)]:
        out, prob = tmp_path / f"o{tile}.tif", tmp_path / f"p{tile}.tif"
        r = predict_raster(
            model_path, raster, out, tile=tile, overlap=overlap, probabilities=prob, batch_size=3
        )
        assert r.tiles_total == len(make_grid(170, 150, tile, overlap)) > 4
        np.testing.assert_allclose(read(prob), truth, atol=2e-5)
        assert (read(out) == codes).all()

    # Without overlap the tile borders differ from the truth: the test above can fail.
    predict_raster(
        model_path,
        raster,
        tmp_path / "seams.tif",
        tile=64,
        overlap=0,
        probabilities=tmp_path / "pseams.tif",
    )
    diff = np.abs(read(tmp_path / "pseams.tif") - truth).max(axis=0)
    assert diff[:, 63:65].max() > 1e-3 and diff[10:50, 10:50].max() < 1e-5


def test_all_nodata_tiles_are_skipped_and_masked_pixels_stay_zero(tmp_path: Path):
    rng = np.random.default_rng(2)
    data = rng.integers(1, 256, (3, 200, 200)).astype(np.uint8)
    data[:, :120, :120] = 0
    data[:, 150:153, 10:14] = 0
    raster = write_geotiff(tmp_path / "r.tif", data, nodata=0)
    model = tiny_model_file(tmp_path / "m.lovecs")
    r = predict_raster(
        model, raster, tmp_path / "o.tif", tile=64, overlap=16, confidence=tmp_path / "c.tif"
    )
    grid = make_grid(200, 200, 64, 16)
    expected = sum(
        1 for t in grid.tiles() if t.window.xoff + 64 <= 120 and t.window.yoff + 64 <= 120
    )
    assert r.tiles_total == len(grid) and r.tiles_skipped == expected == 4
    out, conf = read(tmp_path / "o.tif"), read(tmp_path / "c.tif")
    invalid = (data == 0).any(axis=0)
    assert (out[invalid] == 0).all() and (out[~invalid] > 0).all()
    assert set(np.unique(out[~invalid])) <= {1, 2, 3}
    assert (conf[invalid] == 0).all() and conf[~invalid].min() >= 34 and conf.max() <= 100


def _rgba(path: Path, data: np.ndarray, alpha: np.ndarray) -> Path:
    ds = gdal.GetDriverByName("GTiff").Create(
        str(path), data.shape[2], data.shape[1], 4, gdal.GDT_Byte, ["ALPHA=YES", "TILED=YES"]
    )
    ds.SetGeoTransform((300000.0, 0.5, 0.0, 5000000.0, 0.0, -0.5))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32633)
    ds.SetProjection(srs.ExportToWkt())
    for b in range(3):
        ds.GetRasterBand(b + 1).WriteArray(data[b])
    ds.GetRasterBand(4).WriteArray(alpha)
    ds = None
    return path


def test_alpha_and_dataset_masks_on_own_rasters(tmp_path: Path):
    rng = np.random.default_rng(3)
    data = rng.integers(0, 256, (3, 90, 110)).astype(np.uint8)
    alpha = np.full((90, 110), 255, np.uint8)
    alpha[30:60, 40:] = 0
    rgba = _rgba(tmp_path / "rgba.tif", data, alpha)
    model = tiny_model_file(tmp_path / "m.lovecs")
    predict_raster(model, rgba, tmp_path / "a.tif", tile=32, overlap=8)
    out = read(tmp_path / "a.tif")
    assert out.shape == (90, 110)
    assert (out[alpha == 0] == 0).all() and (out[alpha > 0] > 0).all()

    ds = gdal.GetDriverByName("GTiff").CreateCopy(str(tmp_path / "mask.tif"), gdal.Open(str(rgba)))
    ds = gdal.Translate(str(tmp_path / "m3.tif"), ds, bandList=[1, 2, 3])
    ds.CreateMaskBand(gdal.GMF_PER_DATASET)
    mask = np.full((90, 110), 255, np.uint8)
    mask[::7, :] = 0
    band = ds.GetRasterBand(1).GetMaskBand()
    band.WriteArray(mask)
    band = None
    ds = None
    predict_raster(model, tmp_path / "m3.tif", tmp_path / "b.tif", tile=32, overlap=8)
    out = read(tmp_path / "b.tif")
    assert (out[mask == 0] == 0).all() and (out[mask > 0] > 0).all()


# -- real GeoTIFFs ------------------------------------------------------------------------------

REAL = [
    "RGB.byte.tif",
    "cogeo.tif",
    "drone_ortho_2cm.tif",
    "SP27GTIF.TIF",
    "L7_ETMs.tif",
    "rgb1_fake_nir_epsg3857.tif",
]


@pytest.mark.parametrize("name", REAL)
def test_real_geotiffs_keep_grid_crs_and_masks(shared_data: Path, tmp_path: Path, name: str):
    src = shared_data / "geotiffs" / name
    reader = RasterReader(src)
    model = tiny_model_file(tmp_path / "m.lovecs", bands=reader.band_count, gsd=None)
    r = predict_raster(model, src, tmp_path / "o.tif", tile=128, overlap=16, batch_size=2)
    out_ds, in_ds = gdal.Open(str(r.output)), gdal.Open(str(src))
    assert (out_ds.RasterXSize, out_ds.RasterYSize) == (in_ds.RasterXSize, in_ds.RasterYSize)
    assert out_ds.GetGeoTransform() == pytest.approx(in_ds.GetGeoTransform())
    assert osr.SpatialReference(wkt=out_ds.GetProjection()).IsSame(
        osr.SpatialReference(wkt=in_ds.GetProjection())
    )
    out = out_ds.ReadAsArray()
    valid = reader.read_valid(Window(0, 0, reader.width, reader.height))
    assert (out[~valid] == 0).all() and np.isin(out[valid], [1, 2, 3]).all()
    if name == "RGB.byte.tif":
        assert 0.3 < (~valid).mean() < 0.35 and r.tiles_skipped > 0
    assert (tmp_path / "o.qml").is_file()


def test_real_masks_drone_alpha_and_cogeo_mask(shared_data: Path, tmp_path: Path):
    """The shared files' masks are all-valid; cut holes into copies of them."""
    g = shared_data / "geotiffs"
    drone = gdal.Translate(
        str(tmp_path / "drone.tif"), str(g / "drone_ortho_2cm.tif"), srcWin=[0, 0, 500, 400]
    )
    band = drone.GetRasterBand(4)
    alpha = band.ReadAsArray()
    alpha[100:200, 250:] = 0
    band.WriteArray(alpha)
    band = None
    drone = None
    cog = gdal.Translate(
        str(tmp_path / "cog.tif"),
        str(g / "cogeo.tif"),
        srcWin=[0, 0, 400, 300],
        creationOptions=["TILED=YES"],
    )
    band = cog.GetRasterBand(1).GetMaskBand()
    mask = band.ReadAsArray()
    mask[:, :100] = 0
    band.WriteArray(mask)
    band = None
    cog = None
    model = tiny_model_file(tmp_path / "m.lovecs", gsd=None)
    for src, hole in ((tmp_path / "drone.tif", alpha == 0), (tmp_path / "cog.tif", mask == 0)):
        out = read(
            predict_raster(model, src, tmp_path / f"o-{src.name}", tile=128, overlap=16).output
        )
        assert hole.any() and (out[hole] == 0).all() and (out[~hole] > 0).all()


def test_real_drone_resampled_to_model_gsd(shared_data: Path, tmp_path: Path):
    src = shared_data / "geotiffs" / "drone_ortho_2cm.tif"
    model = tiny_model_file(tmp_path / "m.lovecs", gsd=0.06)
    r = predict_raster(model, src, tmp_path / "o.tif", tile=128, overlap=16)
    assert r.resampled
    grid = make_grid(round(1243 / 3), round(841 / 3), 128, 16)
    assert r.tiles_total == len(grid)  # the model ran on the 6 cm grid
    out_ds = gdal.Open(str(r.output))
    assert (out_ds.RasterXSize, out_ds.RasterYSize) == (1243, 841)
    out = out_ds.ReadAsArray()
    assert (out > 0).mean() > 0.99 and np.isin(out, [0, 1, 2, 3]).all()


# -- inputs: dtypes, bands, GSD, extent, domain --------------------------------------------------


def test_dtypes_are_normalised_with_the_card_statistics(tmp_path: Path):
    rng = np.random.default_rng(4)
    base = rng.integers(1, 256, (3, 64, 80)).astype(np.float64)
    variants = {
        "uint8": (base, 1.0, 0.0),
        "uint16": (base * 100, 100.0, 0.0),
        "int16": (base - 128, 1.0, -128.0),
        "float32": (base / 255, 1 / 255, 0.0),
    }
    results = {}
    torch.manual_seed(0)
    net = build_model(tiny_card())
    for name, (values, scale, shift) in variants.items():
        card = tiny_card()
        card.band_dtype = name  # a model made for this data type: no sensor alignment applies
        card.normalization = {
            "source": {"mean": [100.0 * scale + shift] * 3, "std": [50.0 * scale] * 3}
        }
        raster = write_geotiff(tmp_path / f"{name}.tif", values.astype(name))
        assert RasterReader(raster).dtype_name() == name.replace("uint8", "byte")
        predict_raster(
            (card, net.eval()),
            raster,
            tmp_path / f"o-{name}.tif",
            probabilities=tmp_path / f"p-{name}.tif",
        )
        results[name] = (read(tmp_path / f"o-{name}.tif"), read(tmp_path / f"p-{name}.tif"))
    classes, probs = results["uint8"]
    assert len(np.unique(classes)) > 1
    for name, (c, p) in results.items():
        np.testing.assert_allclose(p, probs, atol=1e-4, err_msg=name)
        assert (c == classes).mean() > 0.999, name


def test_float_nan_and_raster_without_georeference(tmp_path: Path):
    data = np.random.default_rng(10).random((3, 40, 50)).astype(np.float32) * 200
    data[1, 5:9, 7:12] = np.nan
    path = tmp_path / "raw.tif"
    ds = gdal.GetDriverByName("GTiff").Create(str(path), 50, 40, 3, gdal.GDT_Float32)
    for b in range(3):
        ds.GetRasterBand(b + 1).WriteArray(data[b])
    ds = None
    model = tiny_model_file(tmp_path / "m.lovecs", gsd=0.5)  # GSD unknown: no resampling
    r = predict_raster(model, path, tmp_path / "sub" / "o.tif")
    assert not r.resampled
    out_ds = gdal.Open(str(r.output))
    assert out_ds.GetGeoTransform(can_return_null=True) is None and out_ds.GetProjection() == ""
    out = out_ds.ReadAsArray()
    assert (out[5:9, 7:12] == 0).all() and (out > 0).sum() == 40 * 50 - 20


def test_band_mapping_reorders_bands(tmp_path: Path):
    data = np.full((3, 60, 80), 20, np.uint8)
    data[0, :, :40] = 200  # band 1 high on the left half
    data[2, :30, :] = 200  # band 3 high on the top half
    raster = write_geotiff(tmp_path / "r.tif", data)
    model = band1_model(tmp_path / "m.lovecs")
    default = read(predict_raster(model, raster, tmp_path / "a.tif").output)
    assert (default[:, :40] == 1).all() and (default[:, 40:] == 2).all()
    explicit = read(predict_raster(model, raster, tmp_path / "b.tif", bands=[1, 2, 3]).output)
    assert (explicit == default).all()
    mapped = read(predict_raster(model, raster, tmp_path / "c.tif", bands=[3, 2, 1]).output)
    assert (mapped[:30] == 1).all() and (mapped[30:] == 2).all()


def test_band_count_mismatch_is_a_clear_error(tmp_path: Path):
    raster = write_geotiff(tmp_path / "r.tif", np.ones((5, 20, 20), np.uint8))
    model = tiny_model_file(tmp_path / "m.lovecs")
    with pytest.raises(RasterError, match=r"expects 3 band.*5 band.*--bands"):
        predict_raster(model, raster, tmp_path / "o.tif")
    with pytest.raises(RasterError, match=r"expects 3 band.*2 band"):
        predict_raster(model, raster, tmp_path / "o.tif", bands=[1, 2])
    assert leftovers(tmp_path, {"r.tif", "m.lovecs"}) == []
    predict_raster(model, raster, tmp_path / "o.tif", bands=[5, 2, 1])  # a selection works


def test_gsd_resampling_round_trip(tmp_path: Path):
    data = np.full((3, 180, 240), 20, np.uint8)
    data[0, :, :120] = 200  # class 1 left of x = 120, class 2 right of it
    data[:, :20, :] = 0  # nodata rows
    raster = write_geotiff(tmp_path / "r.tif", data, gsd=1.0, nodata=0)
    model = band1_model(tmp_path / "m.lovecs", gsd=2.5)
    r = predict_raster(
        model,
        raster,
        tmp_path / "o.tif",
        tile=32,
        overlap=8,
        confidence=tmp_path / "c.tif",
        probabilities=tmp_path / "p.tif",
    )
    assert r.resampled
    assert r.tiles_total == len(make_grid(96, 72, 32, 8))  # ran on the 2.5 m grid
    out_ds, in_ds = gdal.Open(str(r.output)), gdal.Open(str(raster))
    assert (out_ds.RasterXSize, out_ds.RasterYSize) == (240, 180)
    assert out_ds.GetGeoTransform() == in_ds.GetGeoTransform()
    out = out_ds.ReadAsArray()
    assert (out[:20] == 0).all()
    assert (out[23:, :117] == 1).all() and (out[23:, 123:] == 2).all()
    assert (out[20:] > 0).mean() > 0.99
    conf, probs = read(tmp_path / "c.tif"), read(tmp_path / "p.tif")
    assert (conf[:20] == 0).all() and (conf[23:, :110] > 90).all()
    assert (probs[:, :20] == -1).all() and probs.shape == (2, 180, 240)
    assert leftovers(tmp_path, {"r.tif", "m.lovecs"}) == [
        "c.tif",
        "o.qml",
        "o.tif",
        "o.tif.aux.xml",
        "p.tif",
    ]

    same = predict_raster(model, raster, tmp_path / "n.tif", tile=32, overlap=8, resample=False)
    assert not same.resampled and same.tiles_total == len(make_grid(240, 180, 32, 8))
    close = band1_model(tmp_path / "m2.lovecs", gsd=1.05)  # within 10 %: no resampling
    assert not predict_raster(close, raster, tmp_path / "k.tif").resampled


def test_huge_upsampling_is_refused(tmp_path: Path):
    raster = write_geotiff(tmp_path / "r.tif", np.full((3, 50, 40), 9, np.uint8), gsd=30.0)
    model = tiny_model_file(tmp_path / "m.lovecs", gsd=0.5)
    with pytest.raises(RasterError, match=r"60.0 times coarser.*2400x3000.*--no-resample"):
        predict_raster(model, raster, tmp_path / "o.tif")
    assert not predict_raster(model, raster, tmp_path / "o.tif", resample=False).resampled
    fine = write_geotiff(tmp_path / "f.tif", np.full((3, 50, 40), 9, np.uint8), gsd=0.05)
    assert predict_raster(model, fine, tmp_path / "d.tif").resampled  # downsampling 10x is fine


def test_extent_classifies_only_a_window(tmp_path: Path):
    rng = np.random.default_rng(5)
    data = rng.integers(1, 256, (3, 100, 120)).astype(np.uint8)
    raster = write_geotiff(tmp_path / "r.tif", data, gsd=2.0, origin=(1000.0, 5000.0))
    model = tiny_model_file(tmp_path / "m.lovecs", gsd=2.0)
    full = read(predict_raster(model, raster, tmp_path / "full.tif").output)
    # x 1041..1159 -> columns 20..80, y 4861..4939 -> rows 30..70
    r = predict_raster(model, raster, tmp_path / "part.tif", extent=(1041, 4861, 1159, 4939))
    ds = gdal.Open(str(r.output))
    assert (ds.RasterXSize, ds.RasterYSize) == (60, 40)
    assert ds.GetGeoTransform()[:4] == (1040.0, 2.0, 0.0, 4940.0)
    part = ds.ReadAsArray()
    assert (part[2:-2, 2:-2] == full[32:68, 22:78]).all()  # same result away from the cut


def test_domain_selects_target_statistics_and_csn_slot(tmp_path: Path):
    rng = np.random.default_rng(6)
    raster = write_geotiff(tmp_path / "r.tif", rng.integers(1, 1024, (3, 50, 60)).astype(np.uint16))
    torch.manual_seed(0)
    card = tiny_card()
    card.normalization["target"] = {"mean": [500.0] * 3, "std": [300.0] * 3}
    net = build_model(card).eval()
    seen = []
    layer = next(m for m in net.modules() if isinstance(m, CrossSensorNorm))
    layer.register_forward_hook(lambda m, i, o: seen.append(m.domain))
    r = predict_raster(
        (card, net), raster, tmp_path / "t.tif", domain="target", probabilities=tmp_path / "pt.tif"
    )
    assert r.domain == "target" and set(seen) == {"target"} and layer.domain == "source"
    seen.clear()
    predict_raster((card, net), raster, tmp_path / "s.tif", probabilities=tmp_path / "ps.tif")
    assert set(seen) == {"source"}
    # the target statistics normalised the input: same as a card whose source stats are those
    card2 = card.copy()
    card2.normalization = {"source": card.normalization["target"]}
    predict_raster(
        (card2, net), raster, tmp_path / "s2.tif", probabilities=tmp_path / "ps2.tif", align=False
    )
    np.testing.assert_allclose(read(tmp_path / "pt.tif"), read(tmp_path / "ps2.tif"), atol=1e-6)
    assert np.abs(read(tmp_path / "pt.tif") - read(tmp_path / "ps.tif")).max() > 1e-3


def test_fpn_tiles_are_padded_to_the_input_divisor(tmp_path: Path):
    card = ModelCard(
        architecture=architecture("fpn", encoder="resnet18", csn=True),
        classes=CLASSES,
        band_names=["r", "g", "b"],
        normalization={"source": {"mean": [100.0] * 3, "std": [50.0] * 3}},
        tile_size=64,
        overlap=16,
    )
    assert tile_settings(card, 50, None) == (64, 16)
    assert tile_settings(card, 100, 8) == (96, 8)
    with pytest.raises(ValueError, match="overlap"):
        tile_settings(card, 64, 40)
    torch.manual_seed(0)
    net = build_model(card).eval()
    raster = write_geotiff(
        tmp_path / "r.tif", np.random.default_rng(7).integers(0, 256, (3, 45, 70)).astype(np.uint8)
    )
    r = predict_raster((card, net), raster, tmp_path / "o.tif", tile=64, overlap=16)
    out = read(r.output)
    assert r.tiles_total == 2 and out.shape == (45, 70) and np.isin(out, [1, 2, 3]).all()


# -- pipeline: threads, progress, cancel, failures ------------------------------------------------


def test_stages_run_in_their_own_threads_and_report_progress(tmp_path: Path, monkeypatch):
    data = np.random.default_rng(8).integers(1, 256, (3, 130, 150)).astype(np.uint8)
    raster = write_geotiff(tmp_path / "r.tif", data)
    model = tiny_model_file(tmp_path / "m.lovecs")
    threads = {"read": set(), "write": set()}
    real_read = RasterReader.read
    from lovecs_core.mapping.writer import PredictionWriter

    real_write = PredictionWriter.write

    def spy_read(self, window):
        threads["read"].add(threading.current_thread().name)
        return real_read(self, window)

    def spy_write(self, *a, **k):
        threads["write"].add(threading.current_thread().name)
        return real_write(self, *a, **k)

    monkeypatch.setattr(RasterReader, "read", spy_read)
    monkeypatch.setattr(PredictionWriter, "write", spy_write)
    events = []
    r = predict_raster(
        model,
        raster,
        tmp_path / "o.tif",
        tile=32,
        overlap=8,
        batch_size=2,
        reporter=Reporter(events.append),
    )
    assert threads == {"read": {"lovecs-read"}, "write": {"lovecs-blend"}}
    mapping = [e for e in events if e.stage == "mapping"]
    fractions = [e.fraction for e in mapping]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and len(mapping) > 5
    assert mapping[-1].message == f"{r.tiles_total}/{r.tiles_total} tiles"
    assert events[-1].stage == "writing" and events[-1].fraction == 1.0
    assert lovecs_threads() == []


@pytest.mark.parametrize("stage", ["mapping", "writing", "resampling"])
def test_cancel_stops_threads_and_leaves_no_file(tmp_path: Path, stage: str):
    data = np.random.default_rng(9).integers(1, 256, (3, 300, 300)).astype(np.uint8)
    raster = write_geotiff(tmp_path / "r.tif", data)
    model = tiny_model_file(tmp_path / "m.lovecs", gsd=2.0 if stage == "resampling" else 1.0)
    token = CancelToken()

    def on_event(event):
        if event.stage == stage and 0 < event.fraction < 1:
            token.cancel()

    with pytest.raises(Cancelled):
        predict_raster(
            model,
            raster,
            tmp_path / "o.tif",
            tile=32,
            overlap=8,
            confidence=tmp_path / "c.tif",
            reporter=Reporter(on_event, token),
        )
    assert leftovers(tmp_path, {"r.tif", "m.lovecs"}) == []
    assert lovecs_threads() == []


def test_model_failure_propagates_and_cleans_up(tmp_path: Path):
    raster = write_geotiff(tmp_path / "r.tif", np.full((3, 100, 100), 9, np.uint8))
    torch.manual_seed(0)
    card = tiny_card()
    net = build_model(card).eval()
    calls = []

    def boom(module, inputs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("device exploded")

    net.register_forward_pre_hook(boom)
    with pytest.raises(RuntimeError, match="device exploded"):
        predict_raster((card, net), raster, tmp_path / "o.tif", tile=32, overlap=8)
    assert leftovers(tmp_path, {"r.tif"}) == [] and lovecs_threads() == []


# -- bounded memory ------------------------------------------------------------------------------

CHILD = textwrap.dedent("""
    import json, resource, sys
    import torch
    torch.set_num_threads(1)
    from lovecs_core.model.networks import model_from_file
    from lovecs_core.mapping.predict import predict_raster

    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024

    model = model_from_file(sys.argv[1])
    # getrusage's ru_maxrss survives fork + exec (it would report pytest's own peak), so the
    # peak of this process image is taken from the kernel's VmHWM, reset after the imports.
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = status("VmRSS")
    r = predict_raster(model, sys.argv[2], sys.argv[3], tile=256, overlap=32, batch_size=2,
                       device="cpu")
    peak = status("VmHWM")
    print(json.dumps({"base": base, "peak": peak, "total": r.tiles_total,
                      "skipped": r.tiles_skipped,
                      "maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
""")


def test_memory_stays_bounded_on_a_large_raster(tmp_path: Path):
    """A 5000 x 160000 x 3 uint8 raster (2.4 GB decoded): sparse GeoTIFF, nodata except a stripe
    of real pixels. The run's memory growth must stay below half of even one whole-raster uint8
    array (800 MB), and the child's peak (torch included) below half the raster's size."""
    width, height = 5_000, 160_000
    path = tmp_path / "big.tif"
    ds = gdal.GetDriverByName("GTiff").Create(
        str(path),
        width,
        height,
        3,
        gdal.GDT_Byte,
        ["TILED=YES", "SPARSE_OK=TRUE", "COMPRESS=DEFLATE"],
    )
    ds.SetGeoTransform((500000.0, 1.0, 0.0, 4000000.0, 0.0, -1.0))
    srs = osr.SpatialReference()
    srs.ImportFromEPSG(32640)
    ds.SetProjection(srs.ExportToWkt())
    stripe = np.random.default_rng(0).integers(1, 256, (300, width), dtype=np.uint8)
    for b in range(1, 4):
        band = ds.GetRasterBand(b)
        band.SetNoDataValue(0)
        band.WriteArray(stripe, 0, 100_000)
        band = None
    ds = None
    model = tiny_model_file(tmp_path / "m.lovecs")
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(model), str(path), str(tmp_path / "o.tif")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    m = json.loads(proc.stdout.strip().splitlines()[-1])
    print("memory", m)
    raster_bytes = width * height * 3
    growth = m["peak"] - m["base"]
    assert growth < width * height / 2, m  # < half of one whole-raster uint8 class map
    assert m["peak"] < raster_bytes / 2, m
    assert m["total"] == len(make_grid(width, height, 256, 32))
    assert m["total"] - m["skipped"] < 100  # only tiles touching the stripe were computed
    out = gdal.Open(str(tmp_path / "o.tif"))
    assert (out.RasterXSize, out.RasterYSize) == (width, height)
    assert out.GetRasterBand(1).GetOverviewCount() > 0
    sample = out.ReadAsArray(0, 99_990, width, 320)
    assert (sample[:10] == 0).all() and (sample[10:310] > 0).all() and (sample[310:] == 0).all()


# -- CLI -------------------------------------------------------------------------------------------


def test_cli_predict(tmp_path: Path, capsys):
    data = np.full((3, 60, 80), 20, np.uint8)
    data[2, :30, :] = 200
    raster = write_geotiff(tmp_path / "r.tif", data, origin=(0.0, 60.0))
    model = band1_model(tmp_path / "m.lovecs")
    rc = main(
        [
            "--progress",
            "json",
            "predict",
            "--model",
            str(model),
            "--raster",
            str(raster),
            "--out",
            str(tmp_path / "o.tif"),
            "--bands",
            "3,2,1",
            "--tile",
            "32",
            "--overlap",
            "8",
            "--device",
            "cpu",
            "--batch-size",
            "2",
            "--confidence",
            str(tmp_path / "c.tif"),
            "--extent",
            "0,0,80,50",
        ]
    )
    assert rc == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    result = lines[-1]
    assert result["type"] == "result" and result["output"] == str(tmp_path / "o.tif")
    assert result["confidence"] == str(tmp_path / "c.tif") and result["device"] == "cpu"
    assert any(line["type"] == "progress" and line["stage"] == "mapping" for line in lines)
    out = read(tmp_path / "o.tif")
    assert out.shape == (50, 80) and (out[:20] == 1).all() and (out[20:] == 2).all()

    rc = main(
        [
            "predict",
            "--model",
            str(model),
            "--raster",
            str(raster),
            "--out",
            str(tmp_path / "x.tif"),
            "--device",
            "cuda:7",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 1 and "lovecs predict: error:" in err and "cuda:7" in err


def test_cli_missing_raster_exits_non_zero_with_a_clear_message(tmp_path: Path):
    model = tiny_model_file(tmp_path / "m.lovecs")
    proc = subprocess.run(
        [
            str(ROOT / ".venv" / "bin" / "lovecs"),
            "predict",
            "--model",
            str(model),
            "--raster",
            str(tmp_path / "missing.tif"),
            "--out",
            str(tmp_path / "o.tif"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "raster not found" in proc.stderr and "missing.tif" in proc.stderr
    assert not (tmp_path / "o.tif").exists()

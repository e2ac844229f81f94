from pathlib import Path

import numpy as np
import pytest
from osgeo import gdal

from lovecs_core.mapping.writer import PredictionWriter, set_class_metadata
from lovecs_core.rasters.geotiff import BLOCK, StripWriter, overview_factors
from tests.core.helpers import CLASSES

GT = (500000.0, 2.0, 0.0, 2800000.0, 0.0, -2.0)


def _open(path: Path) -> gdal.Dataset:
    ds = gdal.Open(str(path))
    ds.GetMetadata()  # GDAL 3.6 loads the .aux.xml (category names) lazily
    return ds


def test_strip_writer_any_strip_heights_and_block_buffering(tmp_path: Path, monkeypatch):
    rng = np.random.default_rng(0)
    data = rng.integers(0, 9, (2, 700, 333)).astype(np.uint8)
    w = StripWriter(tmp_path / "a.tif", 333, 700, 2, np.uint8, GT, "", 0)
    assert w.path != w.final and w.path.parent == tmp_path
    writes = []
    real = gdal.Band.WriteArray

    def spy(band, array, xoff=0, yoff=0, *a, **k):  # every GDAL write is whole blocks
        writes.append((yoff, array.shape[0]))
        return real(band, array, xoff, yoff, *a, **k)

    monkeypatch.setattr(gdal.Band, "WriteArray", spy)
    row = 0
    for h in (1, 100, 3, 255, 200, 141):
        w.write(row, data[:, row : row + h])
        row += h
    w.finish()
    monkeypatch.undo()
    assert {y % BLOCK for y, _ in writes} == {0} and {h for _, h in writes} <= {BLOCK, 700 % BLOCK}
    assert not (tmp_path / "a.tif").exists()  # still under the temporary name
    final = w.commit()
    assert final == tmp_path / "a.tif" and list(tmp_path.iterdir()) == [final]
    ds = _open(final)
    assert (ds.ReadAsArray() == data).all()
    assert ds.GetGeoTransform() == GT
    struct = ds.GetMetadata("IMAGE_STRUCTURE")
    assert struct["COMPRESSION"] == "DEFLATE"
    assert ds.GetRasterBand(1).GetBlockSize() == [BLOCK, BLOCK]
    assert ds.GetRasterBand(1).GetOverviewCount() == len(overview_factors(333, 700)) == 2
    assert (
        gdal.Open(f"GTIFF_DIR:2:{final}").GetMetadata("IMAGE_STRUCTURE")["COMPRESSION"] == "DEFLATE"
    )


def test_strip_writer_checks_order_and_completeness(tmp_path: Path):
    w = StripWriter(tmp_path / "b.tif", 10, 20, 1, np.uint8, GT, "", 0)
    with pytest.raises(ValueError, match="consecutive"):
        w.write(5, np.zeros((1, 5, 10), np.uint8))
    w.write(0, np.zeros((1, 5, 10), np.uint8))
    with pytest.raises(ValueError, match="only 5 of 20 rows"):
        w.finish()
    w.abort()
    assert list(tmp_path.iterdir()) == []


def test_abort_removes_the_temporary_file(tmp_path: Path):
    w = StripWriter(tmp_path / "c.tif", 10, 10, 1, np.float32, GT, "", -1)
    w.write(0, np.zeros((1, 10, 10), np.float32))
    assert w.path.exists()
    w.abort()
    assert list(tmp_path.iterdir()) == []


def test_prediction_writer_class_map_style_and_outputs(tmp_path: Path):
    out, conf, prob = tmp_path / "map.tif", tmp_path / "conf.tif", tmp_path / "p.tif"
    (tmp_path / "map.tif.aux.xml").write_text("<PAMDataset/>")  # stale sidecar of an old map
    w = PredictionWriter(
        out,
        300,
        260,
        GT,
        "",
        CLASSES,
        confidence=conf,
        probabilities=prob,
        metadata={"LOVECS_MODEL": "x"},
    )
    classes = np.tile(np.array([0, 1, 2, 3], np.uint8), (260, 75))
    confidence = np.where(classes > 0, 90, 0).astype(np.uint8)
    probs = np.full((3, 260, 300), 0.25, np.float32)
    w.write(0, classes[:100], confidence[:100], probs[:, :100])
    w.write(100, classes[100:], confidence[100:], probs[:, 100:])
    paths = w.commit()
    assert paths == [out, conf, prob]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "conf.tif",
        "map.tif",
        "map.tif.aux.xml",
        "p.tif",
    ]
    ds = _open(out)
    band = ds.GetRasterBand(1)
    assert band.DataType == gdal.GDT_Byte and band.GetNoDataValue() == 0
    assert (band.ReadAsArray() == classes).all()
    table = band.GetColorTable()
    assert table.GetColorEntry(1)[:3] == CLASSES[0].rgb() and table.GetColorEntry(0)[3] == 0
    assert band.GetColorInterpretation() == gdal.GCI_PaletteIndex
    names = band.GetCategoryNames()
    assert [names[c.code] for c in CLASSES] == [c.name for c in CLASSES]
    assert band.GetOverviewCount() >= 1 and ds.GetMetadataItem("LOVECS_MODEL") == "x"
    band = None
    assert gdal.Open(str(conf)).GetRasterBand(1).GetNoDataValue() == 0
    pds = gdal.Open(str(prob))
    assert pds.RasterCount == 3 and pds.GetRasterBand(2).GetDescription() == "p(road)"
    assert pds.GetRasterBand(1).DataType == gdal.GDT_Float32


def test_prediction_writer_abort_leaves_nothing(tmp_path: Path):
    w = PredictionWriter(tmp_path / "m.tif", 50, 50, GT, "", CLASSES, confidence=tmp_path / "c.tif")
    w.write(0, np.ones((20, 50), np.uint8), np.ones((20, 50), np.uint8))
    w.abort()
    assert list(tmp_path.iterdir()) == []


def test_set_class_metadata_on_any_dataset():
    ds = gdal.GetDriverByName("MEM").Create("", 4, 4, 1, gdal.GDT_Byte)
    set_class_metadata(ds, CLASSES)
    band = ds.GetRasterBand(1)
    assert band.GetCategoryNames()[3] == "water"
    assert band.GetColorTable().GetColorEntry(3) == (*CLASSES[2].rgb(), 255)


def test_windows_in_any_order_are_written_as_whole_blocks(tmp_path: Path, monkeypatch):
    from lovecs_core.rasters.blocks import BlockAssembler

    rng = np.random.default_rng(1)
    data = rng.integers(0, 9, (2, 600, 530)).astype(np.uint8)
    w = StripWriter(tmp_path / "w.tif", 530, 600, 2, np.uint8, GT, "", 0)
    writes = []
    real = gdal.Band.WriteArray

    def spy(band, array, xoff=0, yoff=0, *a, **k):
        writes.append((xoff, yoff, array.shape))
        return real(band, array, xoff, yoff, *a, **k)

    monkeypatch.setattr(gdal.Band, "WriteArray", spy)
    # column strips, right to left, of uneven widths and heights (as the blender hands out)
    for x0, x1 in [(400, 530), (97, 400), (0, 97)]:
        for y0, y1 in [(0, 300), (300, 301), (301, 600)]:
            w.write_window(y0, x0, data[:, y0:y1, x0:x1])
    with pytest.raises(ValueError, match="windows"):
        w.write(0, data)
    w.finish()
    monkeypatch.undo()
    assert {(x % BLOCK, y % BLOCK) for x, y, _ in writes} == {(0, 0)}
    assert len(writes) == 2 * 3 * 3  # 2 bands x 3 x 3 blocks, each written once
    ds = _open(w.commit())
    assert (ds.ReadAsArray() == data).all()
    assembler = BlockAssembler(530, 600, 1, np.uint8, BLOCK)
    list(assembler.add(0, 0, np.zeros((1, 10, 10), np.uint8)))
    assert assembler.open_blocks == 1 and not assembler.complete()
    with pytest.raises(ValueError, match="more than once"):
        list(assembler.add(0, 0, np.zeros((1, 256, 256), np.uint8)))


def test_missing_windows_are_an_error(tmp_path: Path):
    w = StripWriter(tmp_path / "x.tif", 300, 300, 1, np.uint8, GT, "", 0)
    w.write_window(0, 0, np.zeros((1, 256, 256), np.uint8))
    with pytest.raises(ValueError, match="only 1 of 4 blocks"):
        w.finish()
    w.abort()
    assert list(tmp_path.iterdir()) == []


def test_multithreaded_block_encoding_keeps_every_pixel_and_overview(tmp_path: Path, monkeypatch):
    from lovecs_core.rasters import geotiff

    assert "NUM_THREADS=ALL_CPUS" in geotiff.CREATION_OPTIONS  # the default: parallel encoding
    data = np.random.default_rng(3).integers(0, 6, (1, 1300, 1100)).astype(np.uint8)
    outputs = {}
    for threads in ("1", "ALL_CPUS"):
        options = [o for o in geotiff.CREATION_OPTIONS if not o.startswith("NUM_THREADS=")]
        monkeypatch.setattr(geotiff, "CREATION_OPTIONS", [*options, f"NUM_THREADS={threads}"])
        monkeypatch.setattr(geotiff, "ENCODE_THREADS", threads)
        w = StripWriter(tmp_path / f"{threads}.tif", 1100, 1300, 1, np.uint8, GT, "", 0)
        for y in range(0, 1300, 300):
            w.write(y, data[:, y : y + 300])
        w.finish()
        w.commit()
        outputs[threads] = _open(tmp_path / f"{threads}.tif")
    one, many = outputs["1"].GetRasterBand(1), outputs["ALL_CPUS"].GetRasterBand(1)
    assert (many.ReadAsArray() == data[0]).all()
    assert many.GetOverviewCount() == one.GetOverviewCount() > 0
    for i in range(one.GetOverviewCount()):
        assert (many.GetOverview(i).ReadAsArray() == one.GetOverview(i).ReadAsArray()).all()

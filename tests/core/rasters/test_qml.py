import xml.etree.ElementTree as ET
from pathlib import Path

from lovecs_core.model.card import ClassInfo
from lovecs_core.rasters.qml import qml_path, qml_text, read_qml_classes, write_qml
from tests.core.helpers import CLASSES


def test_qml_is_a_paletted_renderer_with_the_card_classes():
    text = qml_text(CLASSES)
    assert text.startswith("<!DOCTYPE qgis")
    root = ET.fromstring(text.split("\n", 1)[1])
    assert root.tag == "qgis"
    renderer = root.find("pipe/rasterrenderer")
    assert renderer is not None
    assert renderer.get("type") == "paletted" and renderer.get("band") == "1"
    entries = renderer.findall("colorPalette/paletteEntry")
    assert [(e.get("value"), e.get("label"), e.get("color")) for e in entries] == [
        (str(c.code), c.name, c.color.lower()) for c in CLASSES
    ]
    assert all(e.get("alpha") == "255" for e in entries)
    # nearest-neighbour resampling: class codes are never interpolated
    res = root.find("pipe/provider/resampling")
    assert res.get("zoomedInResamplingMethod") == "nearestNeighbour"


def test_qml_escapes_names_and_round_trips(tmp_path: Path):
    classes = [ClassInfo(7, 'bare & "rocky" <land>', "#A0B1C2"), ClassInfo(200, "été", "#000000")]
    path = write_qml(tmp_path / "m.qml", classes, opacity=0.5)
    assert read_qml_classes(path) == classes
    assert 'opacity="0.5"' in path.read_text(encoding="utf-8")
    assert list(tmp_path.iterdir()) == [path]  # no temporary left


def test_qml_path_is_where_qgis_looks():
    assert qml_path("/data/out/map.tif") == Path("/data/out/map.qml")
    assert qml_path(Path("x.y.tiff")) == Path("x.y.qml")

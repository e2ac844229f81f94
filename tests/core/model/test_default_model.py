"""The bundled default model: a valid card with provenance and scores, and it maps a real GeoTIFF."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from osgeo import gdal

from lovecs_core.mapping.predict import predict_raster
from lovecs_core.model.card import read_card, read_source_sample
from lovecs_core.model.networks import model_from_file

ROOT = Path(__file__).resolve().parents[3]
DEFAULT = ROOT / "resources" / "models" / "default.lovecs"


def test_default_model_card():
    assert DEFAULT.is_file(), "resources/models/default.lovecs is missing (make default-model)"
    assert DEFAULT.stat().st_size < 30e6
    card = read_card(DEFAULT)
    assert [c.name for c in card.classes] == [
        "building",
        "road",
        "water",
        "bare land",
        "vegetation",
    ]
    assert card.band_count == 3 and card.gsd == 0.5 and card.architecture["arch"] == "fpn"
    assert card.provenance["reproduce"].startswith("make default-model")
    # trained with sensor randomisation on half the windows, some source images held out
    randomisation = card.provenance["training"]["randomisation"]
    assert randomisation["parts"] and randomisation["clean_share"] == 0.5
    held_out = {Path(p).stem for p in card.provenance["held_out_images"]}
    assert held_out and not held_out & {Path(p).stem for p in card.provenance["source_images"]}
    # what the sensor alignment compares scenes with, and the sample for adaptation anywhere
    assert len(card.radiometry["reference"]["high_range"]) == 3
    images, labels = read_source_sample(DEFAULT)
    assert images.dtype == np.uint8 and images.shape[1] == 3 and labels.shape[0] == images.shape[0]
    assert set(np.unique(labels)) <= {0, 1, 2, 3, 4, 5}
    miou = card.scores["miou"]
    assert {"target_b: aligned source model", "target_b: lovecs"} <= set(miou)
    assert all(0 <= v <= 1 for v in miou.values())


def test_default_model_maps_a_real_geotiff(shared_data: Path, tmp_path: Path):
    """cogeo.tif: a real 0.6 m satellite RGB in Web Mercator with a mask, like the model's data."""
    src = shared_data / "geotiffs" / "cogeo.tif"
    ds = gdal.Open(str(src))
    gt = ds.GetGeoTransform()
    x0, y0 = gt[0] + 256 * gt[1], gt[3] + 256 * gt[5]
    extent = (x0, y0 + 256 * gt[5], x0 + 256 * gt[1], y0)  # a 256 x 256 px window
    card, model = model_from_file(str(DEFAULT))
    out = tmp_path / "map.tif"
    result = predict_raster((card, model), src, out, device="cpu", extent=extent)
    codes = gdal.Open(str(out)).ReadAsArray()
    assert codes.shape[0] >= 250 and codes.shape[1] >= 250
    present = set(np.unique(codes).tolist())
    assert present <= {0, 1, 2, 3, 4, 5} and len(present - {0}) >= 2
    assert result.tiles_total >= 1
    assert json.loads(json.dumps(result.to_dict()))["output"] == str(out)

import json
from pathlib import Path

import numpy as np
import pytest

from lovecs_core.cli.main import main
from lovecs_core.evaluation.metrics import (
    Accuracy,
    accuracy_from_arrays,
    confusion_matrix,
    evaluate_rasters,
)
from tests.core.helpers import write_geotiff

# reference, prediction: 0 in the reference = no label; 0 in the prediction = unmapped
TRUTH = np.array([1, 1, 1, 2, 2, 3, 3, 3, 0, 0], dtype=np.uint8)
PRED = np.array([1, 1, 2, 2, 2, 3, 1, 0, 3, 1], dtype=np.uint8)


def test_confusion_matrix_by_hand():
    matrix, unmapped = confusion_matrix(PRED, TRUTH, [1, 2, 3])
    assert matrix.dtype == np.int64
    assert matrix.tolist() == [[2, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert unmapped.tolist() == [0, 0, 1]


def test_scores_by_hand():
    acc = accuracy_from_arrays(PRED, TRUTH, [1, 2, 3], ["a", "b", "c"])
    pc = acc.per_class()
    assert acc.total == 8
    np.testing.assert_allclose(pc["iou"], [2 / 4, 2 / 3, 1 / 3])
    np.testing.assert_allclose(pc["precision"], [2 / 3, 2 / 3, 1.0])
    np.testing.assert_allclose(pc["recall"], [2 / 3, 1.0, 1 / 3])
    np.testing.assert_allclose(pc["f1"], [4 / 6, 4 / 5, 2 / 4])
    assert acc.miou == pytest.approx(0.5)
    assert acc.overall_accuracy == pytest.approx(5 / 8)
    # rows incl. unmapped (3, 2, 3), columns (3, 3, 1): pe = 18/64, po = 40/64
    assert acc.kappa == pytest.approx((40 / 64 - 18 / 64) / (1 - 18 / 64))


def test_kappa_matches_the_textbook_formula_and_perfect_map():
    rng = np.random.default_rng(0)
    truth = rng.integers(1, 5, 1000).astype(np.uint8)
    pred = np.where(rng.random(1000) < 0.7, truth, rng.integers(1, 5, 1000)).astype(np.uint8)
    acc = accuracy_from_arrays(pred, truth, [1, 2, 3, 4])
    m = acc.matrix.astype(float)
    n = m.sum()
    po = np.trace(m) / n
    pe = (m.sum(0) * m.sum(1)).sum() / n**2
    assert acc.kappa == pytest.approx((po - pe) / (1 - pe))
    perfect = accuracy_from_arrays(truth, truth, [1, 2, 3, 4])
    assert perfect.kappa == pytest.approx(1.0) and perfect.miou == pytest.approx(1.0)


def test_classes_absent_everywhere_do_not_count_in_the_mean():
    acc = accuracy_from_arrays(np.array([1, 1], np.uint8), np.array([1, 1], np.uint8), [1, 2, 3])
    assert acc.miou == 1.0
    d = acc.to_dict()
    assert d["classes"][1]["iou"] is None  # n/a, not 0


def test_area_adjusted_accuracy_reproduces_olofsson_2014_example():
    # Olofsson et al. (2014), Remote Sens. Environ. 148, worked example: rows = map classes
    # (deforestation, forest gain, stable forest, stable non-forest), columns = reference.
    sample = np.array([[66, 0, 5, 4], [0, 55, 8, 12], [1, 0, 153, 11], [2, 1, 9, 313]])
    map_pixels = np.array([200_000, 150_000, 3_200_000, 6_450_000])
    acc = Accuracy(
        [1, 2, 3, 4],
        ["def", "gain", "forest", "nonforest"],
        sample.T.copy(),
        np.zeros(4, dtype=np.int64),
        map_counts=map_pixels,
        pixel_area=900.0,
    )
    area = acc.area_adjusted()
    assert area is not None
    assert area["overall_accuracy"] == pytest.approx(0.947, abs=5e-4)
    np.testing.assert_allclose(area["users_accuracy"], [0.88, 0.73, 0.93, 0.96], atol=5e-3)
    np.testing.assert_allclose(area["producers_accuracy"], [0.75, 0.85, 0.93, 0.96], atol=5e-3)
    # published error-adjusted areas and 95 % half-widths (ha; 30 m pixels)
    published = [(21_158, 6_158), (11_686, 3_756), (285_770, 15_510), (581_386, 16_282)]
    for k, (ha, ci) in enumerate(published):
        assert area["area"][k] / 1e4 == pytest.approx(ha, abs=1.0)
        assert area["area_ci95"][k] / 1e4 == pytest.approx(ci, abs=1.0)


def test_evaluate_rasters_streams_and_cli_prints_table(tmp_path: Path, capsys):
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 4, (70, 50)).astype(np.uint8)
    noise = rng.integers(1, 4, (70, 50))
    pred = np.where(rng.random((70, 50)) < 0.8, truth, noise).astype(np.uint8)
    pred[truth == 0] = rng.integers(1, 4, int((truth == 0).sum()))
    p = write_geotiff(tmp_path / "pred.tif", pred)
    t = write_geotiff(tmp_path / "truth.tif", truth)
    acc = evaluate_rasters(p, t, rows=16)  # several strips
    ref = accuracy_from_arrays(pred, truth, [1, 2, 3])
    assert acc.codes == [1, 2, 3]
    assert acc.matrix.tolist() == ref.matrix.tolist()
    assert acc.miou == pytest.approx(ref.miou)
    assert acc.pixel_area == pytest.approx(1.0)

    classes = tmp_path / "classes.json"
    classes.write_text(
        json.dumps(
            {
                "classes": [
                    {"code": 1, "name": "building", "color": "#FF0000"},
                    {"code": 2, "name": "road", "color": "#00FF00"},
                    {"code": 3, "name": "water", "color": "#0000FF"},
                ]
            }
        )
    )
    out = tmp_path / "scores.json"
    assert (
        main(
            [
                "evaluate",
                "--pred",
                str(p),
                "--labels",
                str(t),
                "--classes",
                str(classes),
                "--json",
                str(out),
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "building" in printed and "mIoU" in printed and "kappa" in printed
    scores = json.loads(out.read_text())
    assert scores["miou"] == pytest.approx(ref.miou)
    assert scores["confusion_matrix"] == ref.matrix.tolist()
    assert [c["name"] for c in scores["classes"]] == ["building", "road", "water"]


def test_evaluate_rejects_different_grids(tmp_path: Path, capsys):
    p = write_geotiff(tmp_path / "pred.tif", np.ones((10, 10), np.uint8))
    t = write_geotiff(tmp_path / "truth.tif", np.ones((12, 10), np.uint8))
    assert main(["evaluate", "--pred", str(p), "--labels", str(t)]) == 1
    assert "same grid" in capsys.readouterr().err

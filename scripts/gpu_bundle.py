#!/usr/bin/env python3
"""What the GPU machine lacks, in one git-ignored folder that travels with the device call
(docs/gpu.md). The machine has Python 3.12 with torch, numpy, timm, huggingface_hub, safetensors,
pytest ... but no GDAL, no smp and not this project, and it cannot download anything.

    python scripts/gpu_bundle.py build     # .gpu-bundle/: wheels + target_b; fails over the limit
    python scripts/gpu_bundle.py check     # install it into a clean 3.12 venv here (no torch)
    python scripts/gpu_bundle.py ray       # .gpu-bundle-ray/: Ray, stripped, for a second call

The limit is the device tool's: the working tree that travels (tracked and untracked files not
ignored) plus the carried folders, 64 MiB a call. torch never travels: the machine has its own.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 64 * 1024**2
#: the exact wheels the device lacks (KINDS.md lists what it has); never torch
WHEELS = ["gdal-wheel==3.13.3", "segmentation-models-pytorch==0.6.0"]
#: Ray and what it needs that the device lacks
RAY_WHEELS = ["ray==2.60.0", "jsonschema", "jsonschema-specifications", "referencing", "rpds-py"]
#: parts of Ray's wheel a local cluster mapping with actors does not load (Java, the dashboard's
#: web client, the libraries on top of Ray core)
RAY_STRIP = ("ray/jars/", "ray/dashboard/client/", "ray/rllib/", "ray/serve/", "ray/tune/",
             "ray/train/", "ray/data/", "ray/llm/", "ray/cpp/")  # fmt: skip
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64"]  # fmt: skip
DATA = ("scene.tif", "scene.tif.aux.xml", "labels.tif")


def run(cmd: list[str], **kw) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, **kw)


def download(names: list[str], dest: Path) -> None:
    """Binary wheels for CPython 3.12 on manylinux x86-64, without their dependencies."""
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:"]
    cmd += ["--python-version", "3.12", "--implementation", "cp", "-d", str(dest)]
    for p in PLATFORMS:
        cmd += ["--platform", p]
    run(cmd + names)


def project_wheel(dest: Path) -> None:
    """This project (lovecs-core) as a pure-Python wheel, built from a clean copy of its
    sources (no stale ``build/`` of the checkout can slip in)."""
    src = ROOT / ".tmp" / "gpu-bundle-src"
    shutil.rmtree(src, ignore_errors=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "lovecs_core", src / "lovecs_core", ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    run(cmd + ["-w", str(dest.resolve()), "."], cwd=src)
    shutil.rmtree(src, ignore_errors=True)


def copy_data(data: Path, dest: Path) -> None:
    """target_b (scene and labels), read by the adaptation parts."""
    (dest / "target_b").mkdir(parents=True, exist_ok=True)
    for name in DATA:
        src = data / "target_b" / name
        if src.is_file():
            shutil.copy2(src, dest / "target_b" / name)
    if not (dest / "target_b" / "scene.tif").is_file():
        raise SystemExit(f"target_b not found under {data} (set LOVECS_SHARED_DATA)")


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def tree_bytes() -> int:
    """What the device call sends besides the carried folders: tracked files and untracked
    files that git does not ignore."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout  # fmt: skip
    paths = [ROOT / p for p in out.decode().split("\0") if p]
    return sum(p.stat().st_size for p in paths if p.is_file())


def report_size(bundle: Path) -> None:
    mib = 1024**2
    own, tree = folder_bytes(bundle), tree_bytes()
    print(f"{bundle.name}: {own / mib:.1f} MiB; working tree {tree / mib:.1f} MiB; "
          f"together {(own + tree) / mib:.1f} MiB of the device call's {LIMIT / mib:.0f} MiB")  # fmt: skip
    for p in sorted(bundle.rglob("*")):
        if p.is_file():
            print(f"  {p.relative_to(bundle)}  {p.stat().st_size / mib:.1f} MiB")
    if own + tree > LIMIT:
        raise SystemExit(f"over the limit by {(own + tree - LIMIT) / mib:.1f} MiB")


def build(args: argparse.Namespace) -> None:
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    download(WHEELS, out / "wheels")
    project_wheel(out / "wheels")
    copy_data(Path(args.data), out / "data")
    report_size(out)


def strip_wheel(wheel: Path) -> None:
    """Rewrite ``wheel`` without :data:`RAY_STRIP` (its RECORD keeps the names: pip installs
    what is there and does not check the rest)."""
    tmp = wheel.with_suffix(".tmp")
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as dst:  # fmt: skip
        for item in src.infolist():
            if not item.filename.startswith(RAY_STRIP):
                dst.writestr(item, src.read(item.filename))
    os.replace(tmp, wheel)


def ray(args: argparse.Namespace) -> None:
    out = Path(args.out if args.out != ".gpu-bundle" else ".gpu-bundle-ray")
    shutil.rmtree(out, ignore_errors=True)
    download(RAY_WHEELS, out)
    for wheel in out.glob("ray-*.whl"):
        strip_wheel(wheel)
    report_size(out)


def python312(name: str) -> str:
    """``name`` when it runs, else pyenv's 3.12 (its shim needs a version chosen)."""
    if subprocess.run([name, "-c", "pass"], capture_output=True).returncode == 0:
        return name
    found = sorted(Path.home().glob(".pyenv/versions/3.12*/bin/python3.12"))
    if not found:
        raise SystemExit(f"no Python 3.12 found ({name}; pyenv's); give one with --python")
    return str(found[-1])


def check(args: argparse.Namespace) -> None:
    """The device's install line, rehearsed: a clean Python 3.12 venv with numpy (the device
    has it) gets the bundle's wheels from the folder alone (``--no-index``); then osgeo and the
    engine's torch-free modules import, and GDAL reads the carried scene. torch is not on this
    machine for 3.12: it, and the modules that need it, come from the device."""
    out, venv = Path(args.out).resolve(), ROOT / ".tmp" / "gpu-bundle-venv"
    shutil.rmtree(venv, ignore_errors=True)
    run([python312(args.python), "-m", "venv", str(venv)])
    py = str(venv / "bin" / "python")
    run([py, "-m", "pip", "install", "-q", "numpy"])  # a stand-in for the device's numpy
    names = ["gdal-wheel", "segmentation-models-pytorch", "lovecs-core"]
    run([py, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--find-links",
         str(out / "wheels"), *names])  # fmt: skip
    scene = out / "data" / "target_b" / "scene.tif"
    code = (
        "import sys, osgeo, lovecs_core, lovecs_core.contract, lovecs_core.presets\n"
        "from osgeo import gdal, osr\n"
        "from lovecs_core.model.card import read_card\n"
        "gdal.UseExceptions()\n"
        "s = osr.SpatialReference(); s.ImportFromEPSG(32640)\n"
        f"ds = gdal.Open({str(scene)!r}); a = ds.ReadAsArray(0, 0, 64, 64)\n"
        f"card = read_card({str(ROOT / 'resources' / 'models' / 'default.lovecs')!r})\n"
        "print('python', sys.version.split()[0], '| gdal', gdal.__version__, '| scene',\n"
        "      ds.RasterXSize, ds.RasterYSize, a.dtype, '| model', card.name)\n"
    )
    run([py, "-c", code], cwd=str(ROOT / ".tmp"))
    # the device's own line (bench/gpu_device.sh): --target into a folder on PYTHONPATH
    site = ROOT / ".tmp" / "gpu-bundle-site"
    shutil.rmtree(site, ignore_errors=True)
    env = {**os.environ, "PY": py, "SITE": str(site), "BUNDLES": str(out / "wheels")}
    run(["bash", str(ROOT / "bench" / "gpu_device.sh")], env={**env, "INSTALL_ONLY": "1"})
    print("bundle installs with --no-index into a clean Python 3.12 venv (torch: the device's)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("action", choices=("build", "check", "ray"))
    p.add_argument("--out", default=".gpu-bundle", help="bundle folder (default .gpu-bundle)")
    default_data = os.environ.get("LOVECS_SHARED_DATA") or str(ROOT.parent / "shared" / "data")
    p.add_argument("--data", default=default_data, help="shared data with target_b/")
    p.add_argument("--python", default="python3.12", help="the check's Python 3.12")
    args = p.parse_args(argv)
    os.chdir(ROOT)
    {"build": build, "check": check, "ray": ray}[args.action](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

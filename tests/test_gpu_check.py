"""``make gpu-check DEVICE=cpu``: the GPU check's rehearsal on tiny sizes (about a minute on 2
quiet cores), so the script that will run on a lent GPU cannot rot: every part must pass or be
skipped with a reason, and both reports must be written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from gpu_check import NAMES  # noqa: E402

from tests.conftest import SHARED_DATA  # noqa: E402


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    """One rehearsal (without the shared data, the target_b parts skip, saying so)."""
    out = tmp_path_factory.mktemp("gpu-check")
    cmd = [sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--device", "cpu"]
    cmd += ["--out", str(out), "--data", str(SHARED_DATA)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=560)
    assert (out / "report.md").is_file(), done.stdout + done.stderr
    data = json.loads((out / "report.json").read_text())
    data["markdown"] = (out / "report.md").read_text()
    data["rc"], data["output"] = done.returncode, done.stdout + done.stderr
    return data


def test_every_part_passes_or_says_why_it_skipped(report):
    parts = {p["name"]: p for p in report["parts"]}
    assert list(parts) == list(NAMES)
    for name, part in parts.items():
        assert part["status"] in ("passed", "skipped"), (name, part, report["output"][-3000:])
        if part["status"] == "skipped":
            assert part["reason"], name
    assert report["rc"] == 0, report["output"][-3000:]
    print(f"gpu-check rehearsal: {report['total_s']:.0f} s")


def test_the_report_holds_the_measures(report):
    parts = {p["name"]: p for p in report["parts"]}
    assert parts["env"]["results"]["torch"]
    assert parts["mapping_default"]["results"]["end_to_end_float32"]["tiles"] >= 1
    assert parts["mapping_r50"]["results"]["model_only_float32"]["tiles_per_s"] > 0
    if parts["adapt_fast"]["status"] == "passed":  # target_b found
        assert 0 <= parts["adapt_fast"]["results"]["map"]["miou"] <= 1
        assert parts["adapt_fast"]["results"]["verdict"]
        assert parts["torchrun"]["results"]["rank"]["backend"] == "gloo"
    assert "default_end_to_end_compiled" in parts["compile"]["results"]
    assert parts["adapt_paper"]["status"] == "skipped"
    for name in NAMES:
        assert f"| {name} |" in report["markdown"]

"""Shared fixtures: shared data location, small generated rasters, tiny model files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("LOVECS_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The team's shared imagery (env LOVECS_SHARED_DATA, default ../shared/data); skip if absent."""
    if not (SHARED_DATA / "README.md").is_file():
        pytest.skip(f"shared data not found at {SHARED_DATA} (set LOVECS_SHARED_DATA)")
    return SHARED_DATA

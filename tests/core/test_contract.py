"""The contract between the plugin and the engine (lovecs_core/contract.py): importable without
torch or GDAL, the CLI parser built from it without torch, temporary-file names and the pattern
that finds them, band lists, and every stage the engine reports known to the plugin's table."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import lovecs_core
from lovecs_core import contract
from lovecs_core.contract import (
    STAGES,
    TEMPORARY_TAGS,
    UNWEIGHTED_STAGES,
    BandListError,
    band_count_problem,
    band_list_problem,
    checkpoint_path,
    is_temporary_name,
    parse_bands,
    part_path,
    partial_files,
    partial_pattern,
    temporary_path,
)

HEAVY = ("torch", "osgeo", "numpy", "segmentation_models_pytorch", "safetensors")
ENGINE = Path(lovecs_core.__file__).parent


def loaded_after(code: str) -> list[str]:
    """The heavy modules a fresh interpreter holds after running ``code``."""
    probe = f"{code}\nimport sys\nprint('LOADED:', *(m for m in {HEAVY!r} if m in sys.modules))"
    proc = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=str(ENGINE.parent),
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()[-1].split()[1:]


def test_contract_imports_without_torch_gdal_or_numpy():
    assert loaded_after("import lovecs_core.contract") == []


def test_cli_parser_builds_without_torch():
    """``lovecs --help`` and ``lovecs info`` build the whole parser: no torch, GDAL or numpy."""
    assert loaded_after("from lovecs_core.cli.main import build_parser\nbuild_parser()") == []


def test_lovecs_info_loads_no_torch(tmp_path: Path):
    from .helpers import tiny_model_file

    model = tiny_model_file(tmp_path / "m.lovecs")
    code = (
        "from lovecs_core.cli.main import main\n"
        f"assert main(['--progress', 'none', 'info', {str(model)!r}]) == 0"
    )
    assert loaded_after(code) == []


# -- temporary files -------------------------------------------------------------------------------


def test_every_temporary_name_matches_its_output_pattern(tmp_path: Path):
    out = tmp_path / "map.tif"
    pattern = partial_pattern(out)
    for tag in TEMPORARY_TAGS:
        stage = temporary_path(out, tag)
        nested = temporary_path(stage)  # the stage file's own temporary name while written
        for path in (stage, nested, Path(f"{stage}.aux.xml"), Path(f"{nested}.ovr")):
            assert pattern.match(path.name), path.name
            assert is_temporary_name(path.name), path.name
    assert pattern.match(part_path(out).name)


def test_the_pattern_leaves_finished_files_and_other_outputs_alone(tmp_path: Path):
    out = tmp_path / "map.tif"
    pattern = partial_pattern(out)
    for name in (
        "map.tif",
        "map.qml",
        "map.tif.aux.xml",
        ".map.tif",
        ".map.part-xyz.tif",
        ".map.other-01234567.tif",
        "map_confidence.tif",
        temporary_path(tmp_path / "map_confidence.tif").name,
        temporary_path(tmp_path / "mapx.tif").name,
    ):
        assert not pattern.match(name), name
    assert not is_temporary_name("map.tif") and not is_temporary_name("scene.lovecs")


def test_unknown_tags_are_refused(tmp_path: Path):
    with pytest.raises(ValueError, match="TEMPORARY_TAGS"):
        temporary_path(tmp_path / "map.tif", "somewhere-else")


def test_partial_files_lists_only_present_temporary_files(tmp_path: Path):
    out = tmp_path / "map.tif"
    made = [temporary_path(out, tag) for tag in TEMPORARY_TAGS]
    for p in made + [out]:
        p.write_text("x")
    assert partial_files(out) == sorted(made)
    assert partial_files(tmp_path / "missing" / "map.tif") == []


def test_the_engine_names_temporary_files_only_through_the_contract():
    """No engine module builds a hidden temporary name by hand (the drift this module ends)."""
    offenders = []
    for path in sorted(ENGINE.rglob("*.py")):
        if path.name == "contract.py":
            continue
        text = path.read_text()
        for needle in ('".part"', "uuid.uuid4", '"model-grid', '"input-grid'):
            if needle in text:
                offenders.append(f"{path.relative_to(ENGINE)}: {needle}")
    assert offenders == []


# -- bands -----------------------------------------------------------------------------------------


def test_parse_bands():
    assert parse_bands("3,2,1") == [3, 2, 1]
    assert parse_bands(" 1, 4 ") == [1, 4]
    assert parse_bands("") is None and parse_bands(None) is None
    assert parse_bands([2, 1]) == [2, 1]
    with pytest.raises(BandListError, match="comma-separated"):
        parse_bands("red,green")
    with pytest.raises(BandListError, match="start at 1"):
        parse_bands("0,1")


def test_band_checks_say_what_to_do():
    names = ["red", "green", "blue"]
    assert band_count_problem(names, 3, "x") == ""
    message = band_count_problem(names, 4, "'scene'", "'Bands'")
    assert "expects 3 band(s) (red, green, blue)" in message
    assert "4 band(s) of 'scene'" in message and "with 'Bands', e.g. 1,2,3" in message
    assert band_list_problem(names, "1,9", 4, 4, "'scene'") == (
        "'scene' has 4 band(s); band(s) [9] do not exist"
    )
    assert "comma-separated" in band_list_problem(names, "r,g", 4, 4, "'scene'")
    assert band_list_problem(names, "", 4, 3, "'scene'") == ""  # alpha left out
    assert "4 band(s) of" in band_list_problem(names, "", 4, 4, "'scene'")


# -- stages and events -----------------------------------------------------------------------------


def reported_stages() -> dict[str, set[str]]:
    """Stage names the engine passes to its reporter, by module, read from the source."""
    constants = {
        name: getattr(contract, name)
        for name in dir(contract)
        if isinstance(getattr(contract, name), str)
    }
    found: dict[str, set[str]] = {}
    for path in sorted(ENGINE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and node.args):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name not in ("reporter", "report"):
                continue
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                stage = first.value
            elif isinstance(first, ast.Name) and first.id in constants:
                stage = constants[first.id]
            else:
                continue
            found.setdefault(path.stem, set()).add(stage)
    return found


def test_every_stage_the_engine_reports_is_in_the_plugins_table():
    known = {s for table in STAGES.values() for s in table}
    known |= {s for stages in UNWEIGHTED_STAGES.values() for s in stages}
    found = reported_stages()
    assert found, "no reporter calls found: the scan is broken"
    unknown = {module: sorted(stages - known) for module, stages in found.items() if stages - known}
    assert unknown == {}


def test_stage_weights_fill_the_bar_in_order():
    for command, table in STAGES.items():
        spans = sorted(table.values())
        assert spans[0][0] == 0 and 99 <= spans[-1][1] <= 100, command
        for (_, high), (low, _) in zip(spans, spans[1:]):
            assert high == low, command


def test_a_resampled_run_reports_only_known_predict_stages(tmp_path: Path):
    from lovecs_core.mapping.predict import predict_raster
    from lovecs_core.progress import Reporter

    from .helpers import tiny_model_file, write_geotiff

    raster = write_geotiff(
        tmp_path / "r.tif",
        np.random.default_rng(0).integers(0, 255, (3, 80, 60)).astype(np.uint8),
        gsd=1.0,
    )
    model = tiny_model_file(tmp_path / "m.lovecs", gsd=2.0)
    events: list = []
    result = predict_raster(
        model,
        raster,
        tmp_path / "map.tif",
        device="cpu",
        reporter=Reporter(events.append),
        confidence=tmp_path / "c.tif",
    )
    assert result.resampled
    stages = {e.stage for e in events}
    assert stages <= set(STAGES["predict"]) | set(UNWEIGHTED_STAGES["predict"])
    assert {"mapping", "resampling", "writing"} <= stages
    assert [p.name for p in tmp_path.iterdir() if is_temporary_name(p.name)] == []


def test_emit_json_writes_only_event_types_the_plugin_reads():
    import io

    from lovecs_core.progress import emit_json

    with pytest.raises(ValueError, match="unknown event type"):
        emit_json(io.StringIO(), "results")
    stream = io.StringIO()
    emit_json(stream, contract.RESULT, output="x")
    assert stream.getvalue() == '{"type": "result", "output": "x"}\n'


def test_partial_files_include_the_checkpoint_that_the_plugin_cannot_resume(tmp_path: Path):
    """The plugin removes a run's checkpoint with its partial files (only the command line
    resumes); the checkpoint of another output stays."""
    out = tmp_path / "adapted.lovecs"
    ckpt = checkpoint_path(out)
    other = checkpoint_path(tmp_path / "other.lovecs")
    for p in (out, ckpt, part_path(ckpt), other):
        p.write_text("x")
    assert ckpt.name == "adapted.lovecs.ckpt"
    assert partial_files(out) == sorted([ckpt, part_path(ckpt)])


def test_partial_files_include_the_rejected_models_temporary_file(tmp_path: Path):
    """Killed while writing the rejected adapted model: its ``.part`` goes with the run's
    partial files; a complete rejected model stays (the user may want it)."""
    out = tmp_path / "adapted.lovecs"
    rejected = contract.rejected_path(out)
    assert rejected.name == "adapted.rejected.lovecs"
    for p in (rejected, part_path(rejected)):
        p.write_text("x")
    assert partial_files(out) == [part_path(rejected)]
    assert partial_files(tmp_path / "map.tif") == []

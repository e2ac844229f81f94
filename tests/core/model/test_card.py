import json
from pathlib import Path

import pytest
import torch

from lovecs_core.cli.main import main
from lovecs_core.model.card import (
    CARD_KEY,
    ModelCard,
    ModelFileError,
    load_classes,
    load_model_file,
    read_card,
    save_model,
)
from lovecs_core.model.networks import build_model, model_from_file
from tests.core.helpers import tiny_card, tiny_model_file


def test_round_trip_card_and_weights(tmp_path: Path):
    path = tiny_model_file(tmp_path / "m.lovecs")
    card = read_card(path)
    assert card.to_dict() == tiny_card().to_dict()
    card2, state = load_model_file(path)
    model = build_model(card2)
    model.load_state_dict(state)
    loaded_card, loaded = model_from_file(str(path))
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model.eval()(x))
    assert not list(tmp_path.glob("*.part"))


def _write_with_card(path: Path, card_dict) -> Path:
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(1)}, str(path), metadata={CARD_KEY: json.dumps(card_dict)})
    return path


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.pop("classes"), "missing required field 'classes'"),
        (lambda d: d.update(format="other"), "'format' must be"),
        (lambda d: d.update(format_version=99), "unsupported 'format_version'"),
        (lambda d: d["classes"][0].update(color="red"), "classes[0].color"),
        (lambda d: d["classes"][1].update(code=1), "class code 1 appears twice"),
        (lambda d: d["classes"][0].update(code=0), "0 is nodata"),
        (
            lambda d: d["normalization"]["source"].update(mean=[1.0]),
            "normalization.source.mean must list 3",
        ),
        (
            lambda d: d["normalization"]["source"].update(std=[1.0, 0.0, 1.0]),
            "std must be positive",
        ),
        (lambda d: d.update(gsd=-1), "'gsd' must be a positive number"),
        (lambda d: d["bands"].update(count=4), "'bands.count' is 4 but 3 band names"),
        (
            lambda d: d["architecture"].update(head_features=10**6),
            "architecture.head_features must be a whole number 1..8192",
        ),
        (
            lambda d: d["architecture"].update(head_context=32),
            "architecture.head_context must be odd",
        ),
    ],
)
def test_validation_names_the_problem(tmp_path: Path, mutate, message):
    data = tiny_card().to_dict()
    mutate(data)
    path = _write_with_card(tmp_path / "bad.lovecs", data)
    with pytest.raises(ModelFileError) as err:
        read_card(path)
    assert message in str(err.value) and str(path) in str(err.value)


def test_corrupt_and_foreign_files(tmp_path: Path):
    junk = tmp_path / "junk.lovecs"
    junk.write_bytes(b"\x00\x01garbage" * 10)
    with pytest.raises(ModelFileError, match="not a LoveCS model file"):
        read_card(junk)
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(1)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(ModelFileError, match="without a LoveCS model card"):
        read_card(tmp_path / "plain.safetensors")
    with pytest.raises(ModelFileError, match="not found"):
        read_card(tmp_path / "missing.lovecs")
    good = tiny_model_file(tmp_path / "good.lovecs")
    truncated = tmp_path / "truncated.lovecs"
    truncated.write_bytes(good.read_bytes()[:-100])
    with pytest.raises(ModelFileError, match="corrupt or truncated"):
        load_model_file(truncated)


def test_weights_that_do_not_match_the_architecture(tmp_path: Path):
    card = tiny_card()
    other = build_model(tiny_card(bands=4))
    path = save_model(tmp_path / "mismatch.lovecs", card, other.state_dict())
    with pytest.raises(ModelFileError, match="do not match the card.s architecture"):
        model_from_file(str(path))


def test_domain_stats_and_gsd():
    card = tiny_card()
    assert card.stats("target") == card.stats("source")  # falls back before adaptation
    card.normalization["target"] = {"mean": [1.0, 2.0, 3.0], "std": [1.0, 1.0, 1.0]}
    card.adaptation["target_gsd"] = 1.5
    assert card.stats("target")[0] == [1.0, 2.0, 3.0]
    assert card.domain_gsd("target") == 1.5 and card.domain_gsd("source") == 1.0
    assert ModelCard.from_dict(card.to_dict()).to_dict() == card.to_dict()


def test_classes_json_of_the_project(shared_data: Path):
    classes = load_classes(shared_data / "classes.json")
    assert [c.code for c in classes] == [1, 2, 3, 4, 5]
    assert classes[0].rgb() == (0xE6, 0x19, 0x4B)


def test_info_command_prints_card(tmp_path: Path, capsys):
    path = tiny_model_file(tmp_path / "m.lovecs")
    assert main(["info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "tiny test model" in out and "building" in out and "#0082C8" in out
    assert main(["info", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["classes"][2]["name"] == "water"
    assert main(["info", str(tmp_path / "nope.lovecs")]) == 1
    assert "not found" in capsys.readouterr().err

import pytest
import yaml

from local.common.config import apply_overrides, diff_configs, load_config, parse_override
from local.common.errors import RecipeError


def test_tag_config_merges_common_base_and_own_keys():
    cfg = load_config("lstm_2src")
    assert cfg["tag"] == "lstm_2src"
    assert cfg["model"]["name"] == "lstm" and cfg["model"]["n_layers"] == 3  # from base/lstm.yml
    assert cfg["data"]["n_src"] == 2
    assert cfg["training"]["batch_size"] == 16  # from common.yml


def test_overrides_are_typed_and_nested():
    cfg = load_config("lstm_2src", ["training.epochs=3", "optim.lr=3e-4", "data.n_mixtures.train=10",
                                    "model.hidden_size=64", "eval.max_mixtures=null"])
    assert cfg["training"]["epochs"] == 3
    assert cfg["optim"]["lr"] == pytest.approx(3e-4)
    assert cfg["data"]["n_mixtures"] == {"train": 10, "val": 200, "test": 200}
    assert cfg["model"]["hidden_size"] == 64
    assert cfg["eval"]["max_mixtures"] is None


@pytest.mark.parametrize("override, key", [("training.epoch=3", "training.epoch"), ("trainig.epochs=3", "trainig")])
def test_unknown_override_key_is_refused_with_its_name(override, key):
    with pytest.raises(RecipeError, match=f"unknown config key '{key}'"):
        load_config("lstm_2src", [override])


def test_unknown_key_in_file_names_the_file(tmp_path):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "bad.yml").write_text(yaml.safe_dump({"training": {"epochz": 2}}))
    with pytest.raises(RecipeError, match=r"training.epochz.*bad.yml.*Did you mean 'training.epochs'"):
        load_config("bad", dirs=[tmp_path / "conf"])


def test_unknown_tag_lists_available_tags():
    with pytest.raises(RecipeError, match="unknown tag 'lstm_2scr'.*Did you mean 'lstm_2src'"):
        load_config("lstm_2scr")


def test_override_syntax_errors():
    with pytest.raises(RecipeError, match="group.key=value"):
        parse_override("training.epochs")
    with pytest.raises(RecipeError, match="must name a group and a key"):
        apply_overrides({}, ["epochs=3"], {"training": {"epochs": 1}})


def test_diff_lists_changed_keys():
    a = {"optim": {"lr": 1e-3}, "training": {"epochs": 5}}
    b = {"optim": {"lr": 3e-4}, "training": {"epochs": 5}}
    assert diff_configs(a, b) == ["  optim.lr: 0.001 -> 0.0003"]

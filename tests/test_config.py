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


def _freeze(cfg, path):
    from local.common.frozen import write_frozen

    write_frozen(cfg, path)  # as stage 2 writes it (the tag included)
    return path


def test_stage_3_refuses_a_mapping_override_that_contradicts_the_trained_config(tmp_path):
    """`data.n_mixtures={...}` sets data.n_mixtures.test, etc.: that key is as explicit as one named in full."""
    from local.common.config import override_keys
    from local.common.frozen import evaluation_config

    frozen = _freeze(load_config("lstm_2src"), tmp_path / "conf.yml")
    overrides = ["data.n_mixtures={train: 10, val: 5, test: 7}"]
    with pytest.raises(RecipeError, match=r"data.n_mixtures.test = 7 \(trained with"):
        evaluation_config(frozen, load_config("lstm_2src", overrides), override_keys(overrides))
    # the eval group may change freely, also as a mapping
    ok = ["eval.max_mixtures=3"]
    assert evaluation_config(frozen, load_config("lstm_2src", ok), override_keys(ok))["eval"]["max_mixtures"] == 3
    # so may how the run uses the machine, as at stage 2 (local/common/frozen.py RUNTIME_KEYS)
    runtime = ["training.loggers=[csv, tensorboard]", "training.threads=1"]
    cfg = evaluation_config(frozen, load_config("lstm_2src", runtime), override_keys(runtime))
    assert cfg["training"]["loggers"] == ["csv", "tensorboard"] and cfg["training"]["threads"] == 1


def test_a_conf_yml_of_another_format_is_refused_in_one_line_and_a_newer_key_takes_its_default(tmp_path):
    """conf.yml carries format_version: a file without it (an older version of listener) is refused by every
    stage that reads it, naming the file and what to do; within the format, a key the file lacks (added to
    common.yml since) takes its default, so an experiment frozen before it continues unchanged."""
    from local.common.frozen import check_frozen_config, evaluation_config, read_frozen
    from local.models import build_model
    from local.training.finetune import load_initial_weights

    cfg = load_config("dpcl_dprnn_2spk_small")
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "conf.yml").write_text(yaml.safe_dump(cfg))  # no format_version
    (exp / "best_model.pth").write_bytes(b"")
    refusal = r"conf.yml was made by an older version of listener \(conf.yml format 0, this one reads 1\): delete"
    with pytest.raises(RecipeError, match=refusal):
        evaluation_config(exp / "conf.yml", cfg, set())
    with pytest.raises(RecipeError, match=refusal):
        check_frozen_config(load_config("dpcl_dprnn_2spk_small"), exp)
    with pytest.raises(RecipeError, match="training.init_from: .*" + refusal):
        load_initial_weights(build_model(cfg), dict(cfg, training=dict(cfg["training"], init_from=str(exp))))
    (exp / "conf.yml").write_text(yaml.safe_dump({"format_version": 2, **cfg}))
    newer = r"made by a newer version of listener \(conf.yml format 2, this one reads 1\): update this checkout"
    with pytest.raises(RecipeError, match=newer):
        evaluation_config(exp / "conf.yml", cfg, set())
    lacking = dict(cfg, loss={k: v for k, v in cfg["loss"].items() if k != "dc_weights"})
    _freeze(lacking, exp / "conf.yml")
    assert read_frozen(exp / "conf.yml")["loss"]["dc_weights"] == load_config("lstm_2src")["loss"]["dc_weights"]
    assert check_frozen_config(load_config("dpcl_dprnn_2spk_small"), exp) == []


@pytest.mark.parametrize("tag", ["lstm_2src", "dpcl_dprnn_2spk_small"])
def test_data_dir_names_the_dataset_after_the_folder_whatever_the_config(tag, tmp_path):
    """A speaker config names its own data synth_speakers and generates it: a user's folder must neither be
    stored under data/synth_speakers/ nor be ignored for the generator."""
    from local.recipe import parse_args, resolve_config

    folder = tmp_path / "my_voices"
    cfg, _ = resolve_config(parse_args(["prepare", "--tag", tag, "--data_dir", str(folder)]))
    assert (cfg["data"]["dataset"], cfg["data"]["source_dir"]) == ("my_voices", str(folder))
    assert cfg["data"]["format"] in ("auto", "folder")
    named, _ = resolve_config(parse_args(["prepare", "--tag", tag, "--data_dir", str(folder), "--dataset", "voices9"]))
    assert named["data"]["dataset"] == "voices9"
    listed, _ = resolve_config(parse_args(["prepare", "--tag", tag, "--data_dir", str(folder), "data.format=listing"]))
    assert listed["data"]["format"] == "listing"


def test_a_folder_of_categories_gets_the_measured_folder_defaults_below_the_options(tmp_path):
    """--data_dir with a category config: dynamic mixing, speed perturbation 0.1 and a 15-minute cap, unless the
    command line says otherwise; not for a speaker config, a named format or the synthetic data; and they do not
    count as options given (stage 3 compares only those with the frozen config)."""
    from local.recipe import parse_args, resolve_config

    def resolved(*argv):
        cfg, given = resolve_config(parse_args(["train", *argv]))
        return (cfg["data"]["dynamic_mixing"], cfg["data"]["augmentation"]["speed"],
                cfg["training"]["max_minutes"]), given

    folder = str(tmp_path / "my_sounds")
    settings, given = resolved("--tag", "lstm_2src_sisdr", "--data_dir", folder)
    assert settings == (True, 0.1, 15)
    assert not any(o.startswith(("data.dynamic", "data.aug", "training")) for o in given)
    assert resolved("--tag", "lstm_2src_sisdr", "--data_dir", folder, "data.dynamic_mixing=false",
                    "training.max_minutes=null")[0] == (False, 0.1, None)
    assert resolved("--tag", "lstm_2src_sisdr")[0] == (False, 0.0, None)
    assert resolved("--tag", "lstm_2src_sisdr", "--data_dir", folder, "data.format=listing")[0] == (False, 0.0, None)
    assert resolved("--tag", "dpcl_dprnn_2spk_small", "--data_dir", folder)[0][:2] == (False, 0.0)

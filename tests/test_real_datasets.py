"""ESC-50 and FSDKaggle2018 recipes on small fixture trees in exactly the datasets' layouts."""
import os
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import yaml

from local.common.config import load_config
from local.common.errors import RecipeError
from local.data.prepare import prepare

ROOT = Path(__file__).resolve().parent.parent
TINY_VIEWS = ["--data.n_mixtures", "{train: 12, val: 4, test: 4}", "--data.mixture_seconds", "0.5"]


def _tone(path, sr, seconds, freq):
    t = np.arange(int(sr * seconds)) / sr
    sf.write(path, 0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * np.random.default_rng(int(freq)).standard_normal(len(t)),
             sr)


@pytest.fixture
def esc50_tree(tmp_path):
    root = tmp_path / "ESC-50-master"
    (root / "meta").mkdir(parents=True)
    (root / "audio").mkdir()
    rows = []
    for target, category in enumerate(["dog", "rooster", "rain", "sea_waves"]):
        for fold in range(1, 6):
            name = f"{fold}-{1000 + target}-A-{target}.wav"
            _tone(root / "audio" / name, 44100, 1.0, 200 + 300 * target + 10 * fold)
            rows.append([name, fold, target, category, False, f"{1000 + target}", "A"])
    pd.DataFrame(rows, columns=["filename", "fold", "target", "category", "esc10", "src_file", "take"]).to_csv(
        root / "meta" / "esc50.csv", index=False)
    return root


@pytest.fixture
def fsd_tree(tmp_path):
    root = tmp_path / "FSDKaggle2018"
    (root / "FSDKaggle2018.meta").mkdir(parents=True)
    audio = root / "FSDKaggle2018.audio_train"
    audio.mkdir()
    rows = []
    for k, (label, n_verified) in enumerate([("Bark", 60), ("Trumpet", 62), ("Gunshot_or_gunfire", 61), ("Cello", 30)]):
        for i in range(n_verified + 3):
            name = f"{label[:3].lower()}{i:04d}.wav"
            _tone(audio / name, 44100, 0.15, 300 + 200 * k + i)
            rows.append([name, label, int(i < n_verified), 1000 * k + i, "CC0"])
    pd.DataFrame(rows, columns=["fname", "label", "manually_verified", "freesound_id", "license"]).to_csv(
        root / "FSDKaggle2018.meta" / "train_post_competition.csv", index=False)
    return root


def run_egs(recipe, cwd, *args):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run([str(ROOT / "egs" / recipe / "run.sh"), *args], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=600)


def test_esc50_recipe_maps_folds_to_splits_and_resamples(esc50_tree, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    result = run_egs("esc50", work, "--stop_stage", "1", "--data_dir", str(esc50_tree), "--tag", "lstm_3src",
                     *TINY_VIEWS)
    assert result.returncode == 0, result.stderr[-3000:]
    sources = pd.read_csv(work / "data" / "esc50" / "sources.csv")
    assert len(sources) == 20 and set(sources["sample_rate"]) == {44100}
    folds = sources["path"].str.extract(r"audio/(\d)-")[0].astype(int)
    assert (sources["split"] == folds.map({1: "train", 2: "train", 3: "train", 4: "val", 5: "test"})).all()
    test = pd.read_csv(work / "data" / "esc50" / "3src" / "test.csv")
    assert set(test["sample_rate"]) == {16000} and set(test["length"]) == {8000}
    assert test[["path_0", "path_1", "path_2"]].stack().str.startswith("audio/5-").all()
    from local.data.dataset import ViewDataset

    mix, src = ViewDataset(work / "data" / "esc50" / "3src" / "test.csv", esc50_tree)[0]
    assert src.shape == (3, 8000)
    # a 1 s clip at 44.1 kHz lands as at most 16000 samples at 16 kHz: each source is active somewhere
    assert (src.abs().amax(dim=1) > 0.05).all()


def test_fsdkaggle2018_keeps_verified_clips_and_the_study_ranges(fsd_tree, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    result = run_egs("fsdkaggle2018", work, "--stop_stage", "1", "--data_dir", str(fsd_tree), "--tag", "lstm_2src",
                     *TINY_VIEWS)
    assert result.returncode == 0, result.stderr[-3000:]
    sources = pd.read_csv(work / "data" / "fsdkaggle2018" / "sources.csv")
    meta = pd.read_csv(fsd_tree / "FSDKaggle2018.meta" / "train_post_competition.csv")
    verified = set(meta[meta["manually_verified"] == 1]["fname"])
    assert set(sources["path"].str.split("/").str[-1]) == verified
    assert "leaving out 1 categories without files in every split: Cello" in result.stdout
    views = {s: pd.read_csv(work / "data" / "fsdkaggle2018" / "2src" / f"{s}.csv") for s in ("train", "val", "test")}
    for split, (lo, hi) in {"train": (0, 40), "val": (40, 50), "test": (50, 60)}.items():
        files = pd.concat([views[split]["path_0"], views[split]["path_1"]])
        index = files.str.extract(r"(\d{4})\.wav")[0].astype(int)
        assert index.between(lo, hi - 1).all(), split
        labels = set(views[split]["label_0"]) | set(views[split]["label_1"])
        assert "Cello" not in labels


def test_metadata_missing_a_column_is_named(fsd_tree, esc50_tree, tiny_cfg, tmp_path):
    meta_path = fsd_tree / "FSDKaggle2018.meta" / "train_post_competition.csv"
    pd.read_csv(meta_path).drop(columns=["manually_verified"]).to_csv(meta_path, index=False)
    cfg = dict(tiny_cfg["data"], format="fsdkaggle2018", source_dir=str(fsd_tree))
    with pytest.raises(RecipeError, match="train_post_competition.csv lacks column.s. manually_verified"):
        prepare(cfg, tmp_path / "fsd")
    meta_path = esc50_tree / "meta" / "esc50.csv"
    pd.read_csv(meta_path).drop(columns=["fold"]).to_csv(meta_path, index=False)
    with pytest.raises(RecipeError, match="esc50.csv lacks column.s. fold"):
        prepare(dict(tiny_cfg["data"], format="esc50", source_dir=str(esc50_tree)), tmp_path / "esc")
    assert not (tmp_path / "fsd" / "sources.csv").exists() and not (tmp_path / "esc" / "sources.csv").exists()


def test_unknown_format_is_refused(tiny_cfg):
    with pytest.raises(RecipeError, match="unknown data.format 'wsj'"):
        prepare(dict(tiny_cfg["data"], format="wsj"), "unused")


def test_file_selection_range_is_ignored_with_a_message_where_the_dataset_fixes_splits(esc50_tree, tmp_path, capsys):
    """Without the recipe's `null`, the default range used to keep 2 of 3 train clips and 0 of 1 test clip per
    category inside ESC-50's folds, silently. Now every clip of a fold is used, and the run says so."""
    from local.data.sources import load_sources
    from local.data.views import make_views, split_candidates

    cfg = load_config("lstm_2src", ["data.format=esc50", f"data.source_dir={esc50_tree}", "data.mixture_seconds=0.5",
                                    "data.n_mixtures={train: 4, val: 2, test: 2}"])
    assert cfg["data"]["file_selection_range"] is not None  # the default range, not the recipe's null
    data_dir = tmp_path / "esc50"
    prepare(cfg["data"], data_dir)
    sources, _ = load_sources(data_dir)
    candidates = split_candidates(sources, cfg["data"])
    assert {split: sum(map(len, per_label.values())) for split, per_label in candidates.items()} == \
        {"train": 12, "val": 4, "test": 4}  # 4 categories x 3, 1 and 1 folds
    make_views(cfg["data"], data_dir)
    assert "data.file_selection_range is ignored" in capsys.readouterr().out


def test_views_of_an_older_format_are_refused_in_one_line_and_left_alone(esc50_tree, tmp_path):
    """views.yml carries format_version; views without it (made by an older version, e.g. with levels measured at
    the file's rate) are refused, naming the folder and what to do, and nothing is rewritten."""
    from local.data.views import make_views

    cfg = load_config("lstm_2src", ["data.format=esc50", f"data.source_dir={esc50_tree}", "data.mixture_seconds=0.5",
                                    "data.n_mixtures={train: 4, val: 2, test: 2}"])
    data_dir = tmp_path / "esc50"
    prepare(cfg["data"], data_dir)
    out = make_views(cfg["data"], data_dir)
    meta = out / "views.yml"
    stored = yaml.safe_load(meta.read_text())
    assert stored["format_version"] == 2 and stored["file_selection_range"] is None
    del stored["format_version"]
    meta.write_text(yaml.safe_dump(stored))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(RecipeError, match=rf"{out} was made by an older version of listener \(views.yml format 1, "
                                          rf"this one writes 2\): delete {out} and re-run stage 1"):
        make_views(cfg["data"], data_dir)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before

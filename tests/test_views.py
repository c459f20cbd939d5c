import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import yaml

from local.common.errors import RecipeError
from local.data.sources import load_sources
from local.data.view_csv import views_dir
from local.data.views import make_split_views, split_candidates


def _views(data_dir, n_src=2):
    return {s: pd.read_csv(views_dir(data_dir, n_src) / f"{s}.csv") for s in ("train", "val", "test")}


def test_labels_within_a_mixture_are_distinct(tiny_data):
    data_dir, _ = tiny_data
    for split, df in _views(data_dir).items():
        assert (df["label_0"] != df["label_1"]).all(), split


def test_no_source_file_is_shared_across_splits(tiny_data):
    data_dir, _ = tiny_data
    files = {s: set(df["path_0"]) | set(df["path_1"]) for s, df in _views(data_dir).items()}
    assert not files["train"] & files["val"]
    assert not files["train"] & files["test"]
    assert not files["val"] & files["test"]


def test_every_split_uses_the_same_label_set(tiny_data):
    data_dir, _ = tiny_data
    sources, _ = load_sources(data_dir)
    expected = set(sources["label"])
    for split, df in _views(data_dir).items():
        # 24 train mixtures cover all 8 labels; val/test are smaller, so check the candidate sets instead
        if split == "train":
            assert set(df["label_0"]) | set(df["label_1"]) == expected


def test_candidates_follow_file_selection_range(tiny_data):
    data_dir, cfg = tiny_data
    sources, _ = load_sources(data_dir)
    cands = split_candidates(sources, cfg["data"])
    for label in sources["label"].unique():
        names = {s: sorted(r["path"] for r in cands[s][label]) for s in cands}
        all_files = sorted(sources[sources["label"] == label]["path"])
        assert names["train"] == all_files[0:4] and names["val"] == all_files[4:5] and names["test"] == all_files[5:6]


def test_overlapping_selection_ranges_are_refused(tiny_data):
    data_dir, cfg = tiny_data
    sources, _ = load_sources(data_dir)
    overlapping = dict(cfg["data"], file_selection_range={"train": [0, 5], "val": [4, 5], "test": [5, 6]})
    with pytest.raises(RecipeError, match="splits train and val share 8 files"):
        split_candidates(sources, overlapping)


def test_segments_lie_inside_their_files_and_mixture(tiny_data):
    data_dir, _ = tiny_data
    _, root = load_sources(data_dir)
    for df in _views(data_dir).values():
        for _, row in df.iterrows():
            for i in range(2):
                frames = sf.info(str(root / row[f"path_{i}"])).frames
                assert 0 <= row[f"start_{i}"] < row[f"end_{i}"] <= frames
                seg = row[f"end_{i}"] - row[f"start_{i}"]
                assert 0 <= row[f"mix_start_{i}"] and row[f"mix_start_{i}"] + seg <= row["length"]


def test_same_seed_gives_the_same_csv(tiny_data):
    data_dir, cfg = tiny_data
    sources, root = load_sources(data_dir)
    cands = split_candidates(sources, cfg["data"])["train"]
    a = make_split_views(cands, root, 3, 4000, 8000, 10, (-30, -20), np.random.default_rng([1, 2]), "train")
    b = make_split_views(cands, root, 3, 4000, 8000, 10, (-30, -20), np.random.default_rng([1, 2]), "train")
    c = make_split_views(cands, root, 3, 4000, 8000, 10, (-30, -20), np.random.default_rng([1, 3]), "train")
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(c)
    assert (a[["label_0", "label_1", "label_2"]].nunique(axis=1) == 3).all()


def test_gains_set_the_requested_segment_levels(tiny_data):
    """gain_db + the segment's own RMS level must land inside level_db_range."""
    data_dir, cfg = tiny_data
    _, root = load_sources(data_dir)
    lo, hi = cfg["data"]["level_db_range"]
    df = _views(data_dir)["train"]
    for _, row in df.head(6).iterrows():
        audio, _ = sf.read(str(root / row["path_0"]), start=row["start_0"], stop=row["end_0"])
        level = 20 * np.log10(np.sqrt(np.mean(audio**2))) + row["gain_db_0"]
        assert lo - 0.01 <= level <= hi + 0.01


def test_too_many_sources_for_the_categories(tiny_data):
    data_dir, cfg = tiny_data
    sources, root = load_sources(data_dir)
    cands = split_candidates(sources, cfg["data"])["train"]
    with pytest.raises(RecipeError, match="n_src = 9 but the dataset has only 8 categories"):
        make_split_views(cands, root, 9, 4000, 8000, 1, (-30, -20), np.random.default_rng(0), "train")


def test_views_are_skipped_when_up_to_date_and_refused_when_settings_change(tiny_data, capsys):
    from local.data.views import make_views

    data_dir, cfg = tiny_data
    make_views(cfg["data"], data_dir)
    assert "up to date; skipped" in capsys.readouterr().out
    # views made before a setting existed stay valid while the setting keeps its neutral value
    meta = views_dir(data_dir, 2) / "views.yml"
    stored = yaml.safe_load(meta.read_text())
    meta.write_text(yaml.safe_dump({k: v for k, v in stored.items() if k != "disjoint_labels"}))
    make_views(cfg["data"], data_dir)
    assert "up to date; skipped" in capsys.readouterr().out
    changed = dict(cfg["data"], view_seed=99)
    with pytest.raises(RecipeError, match="differs in: view_seed"):
        make_views(changed, data_dir)

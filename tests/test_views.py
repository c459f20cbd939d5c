import numpy as np
import pandas as pd
import pytest
import soundfile as sf

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
    a = make_split_views(cands, root, 3, 4000, 8000, 10, (-30, -20), np.random.default_rng([1, 2]), "train")[0]
    b = make_split_views(cands, root, 3, 4000, 8000, 10, (-30, -20), np.random.default_rng([1, 2]), "train")[0]
    c = make_split_views(cands, root, 3, 4000, 8000, 10, (-30, -20), np.random.default_rng([1, 3]), "train")[0]
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(c)
    assert (a[["label_0", "label_1", "label_2"]].nunique(axis=1) == 3).all()


def test_gains_set_the_requested_levels_in_the_loaders_output(tiny_data):
    """Each source as the loader returns it has its active level (RMS over the 10 ms frames within 40 dB of
    its loudest, written out here) inside level_db_range, and the sources of every view sound together for
    data.min_overlap, or for all of the shorter one where a source sounds for less (a short hit lies wholly
    inside the other). The frames here start at the mixture's first sample, those of stage 1 at the segment's,
    so an edge may move by up to one frame on each side of a source's active stretch."""
    from local.data.dataset import ViewDataset

    data_dir, cfg = tiny_data
    _, root = load_sources(data_dir)
    lo, hi = cfg["data"]["level_db_range"]
    dataset = ViewDataset(views_dir(data_dir, 2) / "train.csv", root)
    hop = 80  # 10 ms at 8 kHz
    for index in range(8):
        _, sources = dataset[index]
        active = []
        for source in sources.double().numpy():
            frames = np.array([np.mean(source[k : k + hop] ** 2) for k in range(0, len(source), hop)])
            keep = (frames >= frames.max() / 1e4) & (frames > 1e-9)
            samples = np.concatenate([source[k * hop : (k + 1) * hop] for k in np.flatnonzero(keep)])
            assert lo - 0.05 <= 10 * np.log10(np.mean(samples**2)) <= hi + 0.05
            active.append(np.repeat(keep, hop)[: len(source)])
        need = min([cfg["data"]["min_overlap"] * 8000] + [a.sum() for a in active])
        assert np.logical_and.reduce(active).sum() >= need - 2 * hop, index


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
    make_views(cfg["data"], data_dir)
    assert "up to date; skipped" in capsys.readouterr().out
    changed = dict(cfg["data"], view_seed=99)
    with pytest.raises(RecipeError, match="differs in: view_seed"):
        make_views(changed, data_dir)


@pytest.mark.parametrize("policy", ["t1", "t2"])
def test_mixing_policies_place_sources_as_their_formulas_say(policy):
    """placement() against the formulas, on a file longer than the mixture: t1 onsets are uniform on
    [0, L - 1 s] and last to the end, mean (L - 1 s) / 2; t2 durations are uniform on [1 s, L] (mean
    (1 s + L) / 2) with onsets uniform on [0, L - d] (mean (L - 1 s) / 4)."""
    from local.data.views import placement

    sr, length, n = 1000, 4000, 20000
    rng = np.random.default_rng(0)
    draws = np.array([placement(10 * length, length, sr, policy, rng) for _ in range(n)])  # (segment, onset)
    seg, onset = draws[:, 0], draws[:, 1]
    assert (onset >= 0).all() and (onset + seg <= length).all() and (seg >= sr).all()
    if policy == "t1":
        assert (onset + seg == length).all()
        assert onset.mean() == pytest.approx((length - sr) / 2, rel=0.02)
    else:
        assert seg.mean() == pytest.approx((sr + length) / 2, rel=0.02)
        assert onset.mean() == pytest.approx((length - sr) / 4, rel=0.03)
    # a file shorter than its slot ends early; t0 keeps the old rule (file length, onset anywhere it fits)
    assert (placement(500, length, sr, "t0", rng)[0] == 500
            and placement(10 * length, length, sr, "t0", rng) == (length, 0))


def test_policies_give_the_overlap_their_formulas_predict_read_from_the_view_csvs(tiny_cfg, tmp_path):
    """Mean fraction of a 3 s mixture where both sources sound, computed from the views' own columns, on 5 s
    files: 1 under t0 (every source over the whole mixture); under t1 both run from onsets uniform on [0, 2 s] to
    the end, so the overlap is (3 - E[max of two onsets]) / 3 = (3 - 4/3) / 3 = 5/9; t2's random durations
    overlap less again (by a simulation of its definition)."""
    from local.data.prepare import prepare
    from local.data.views import make_views

    rng = np.random.default_rng(0)
    for label in ("a", "b", "c"):
        for k in range(3):
            path = tmp_path / "sounds" / label / f"{k}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, 0.1 * rng.standard_normal(5 * 8000), 8000)
    overlap = {}
    for policy in ("t0", "t1", "t2"):
        data = dict(tiny_cfg["data"], format="folder", source_dir=str(tmp_path / "sounds"), mixing_policy=policy,
                    mixture_seconds=3.0, sample_rate=8000, n_mixtures={"train": 2000, "val": 2, "test": 2},
                    file_selection_range={"train": [0, 1], "val": [1, 2], "test": [2, 3]})
        prepare(data, tmp_path / "data")
        out = make_views(data, tmp_path / "data")
        assert out.name == ("2src" if policy == "t0" else f"2src_{policy}")
        df = pd.read_csv(out / "train.csv")
        spans = []
        for i in range(2):  # files and mixtures are both at 8 kHz: file samples are mixture samples
            begin, stop = df[f"mix_start_{i}"], df[f"mix_start_{i}"] + df[f"end_{i}"] - df[f"start_{i}"]
            assert (begin >= 0).all() and (stop <= df["length"]).all()
            spans.append((begin, stop))
        both = (np.minimum(spans[0][1], spans[1][1]) - np.maximum(spans[0][0], spans[1][0])).clip(lower=0)
        overlap[policy] = float((both / df["length"]).mean())
    assert overlap["t0"] == pytest.approx(1.0)
    assert overlap["t1"] == pytest.approx(5 / 9, abs=0.02)
    # t2: durations uniform on [1 s, 3 s], onsets uniform where the source fits; the expected overlap of two such
    # independent intervals by simulation (written here from the policy's definition, not from views.py)
    sim = np.random.default_rng(1)
    duration = sim.uniform(1.0, 3.0, size=(2, 400_000))
    onset = sim.uniform(0.0, 1.0, size=duration.shape) * (3.0 - duration)
    expected_t2 = float((np.minimum(onset[0] + duration[0], onset[1] + duration[1])
                         - np.maximum(onset[0], onset[1])).clip(min=0).mean() / 3.0)
    assert overlap["t2"] == pytest.approx(expected_t2, abs=0.025)  # 2000 mixtures: standard error about 0.006
    assert overlap["t2"] < overlap["t1"]


def test_class_pools_are_nested_and_views_use_only_their_pool(tiny_data, tmp_path):
    import shutil

    from local.data.sources import load_sources
    from local.data.views import class_pool, make_views, split_candidates

    data_dir, cfg = tiny_data
    labels = sorted(load_sources(data_dir)[0]["label"].unique())
    three, five = class_pool(labels, 3, 17), class_pool(labels, 5, 17)
    assert len(three) == 3 and len(five) == 5 and set(three) < set(five) < set(labels)
    assert class_pool(labels, 3, 18) != three or class_pool(labels, 5, 18) != five  # the seed orders them
    assert set(split_candidates(load_sources(data_dir)[0], dict(cfg["data"], n_classes=3))["test"]) == set(three)
    copy = tmp_path / "pool"
    shutil.copytree(data_dir, copy, ignore=shutil.ignore_patterns("2src*"))
    out = make_views(dict(cfg["data"], n_classes=3), copy)
    assert out.name == "2src_c3"
    df = pd.read_csv(out / "train.csv")
    assert set(df["label_0"]) | set(df["label_1"]) <= set(three)
    with pytest.raises(RecipeError, match="data.n_classes = 9 but the dataset has 8 categories"):
        class_pool(labels, 9, 17)

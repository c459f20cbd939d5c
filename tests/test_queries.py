"""Query items for category-queried extraction (local/data/queries.py, issue 23 item 1)."""
import pandas as pd
import pytest
import torch

from local.common.errors import RecipeError
from local.data.dataset import ViewDataset
from local.data.queries import QueryDataset, query_slots
from local.data.sources import load_sources
from local.data.view_csv import views_dir


def test_every_source_is_a_target_once_and_negatives_name_absent_labels(tiny_data):
    """Per mixture: n_src positive items, each source once, queried by its own label, with its own signal as the
    target; then the negatives, labels of the dataset absent from the mixture, with a silent target."""
    data_dir, cfg = tiny_data
    _, root = load_sources(data_dir)
    base = ViewDataset(views_dir(data_dir, 2) / "test.csv", root)
    labels = sorted(pd.read_csv(data_dir / "sources.csv")["label"].unique())
    queries = QueryDataset(base, labels, negatives=2, seed=3, return_meta=True)
    assert len(queries) == 4 * len(base)
    for m in range(len(base)):
        mixture, sources = base[m]
        items = [queries[4 * m + slot] for slot in range(4)]
        assert sorted(meta["target"] for *_, meta in items) == [-1, -1, 0, 1]
        row_labels = {base.df.iloc[m]["label_0"], base.df.iloc[m]["label_1"]}
        for (mix, query), target, meta in items:
            assert torch.equal(mix, mixture) and labels[query] == meta["query"]
            if meta["target"] >= 0:
                assert meta["query"] == base.df.iloc[m][f"label_{meta['target']}"]
                assert torch.equal(target, sources[meta["target"]])
            else:
                assert meta["query"] not in row_labels and not target.any()
        negatives = [meta["query"] for *_, meta in items if meta["target"] < 0]
        assert len(set(negatives)) == 2  # drawn without replacement where enough labels are absent


def test_query_order_is_seeded_per_epoch_and_mixture():
    labels = ["a", "b", "c", "d", "e"]
    first = query_slots(labels, ["b", "d", "a"], 1, seed=0, epoch=0, mixture=7)
    assert first == query_slots(labels, ["b", "d", "a"], 1, seed=0, epoch=0, mixture=7)
    assert sorted(t for t, _ in first) == [-1, 0, 1, 2] and first[-1][1] in {"c", "e"}
    draws = {tuple(query_slots(labels, ["b", "d", "a"], 1, seed=0, epoch=e, mixture=7)) for e in range(12)}
    assert len(draws) > 1  # another epoch, another order
    with pytest.raises(RecipeError, match="no negative query exists"):
        query_slots(["a", "b"], ["a", "b"], 1, seed=0, epoch=0, mixture=0)


def test_queries_over_dynamic_mixing_follow_the_drawn_mixture(tiny_data):
    """With dynamic mixing, epoch e's item of mixture m queries the sources drawn for (e, m), the same in another
    process."""
    from local.data.dynamic_mixing import DynamicMixingDataset

    data_dir, cfg = tiny_data
    csv = views_dir(data_dir, 2) / "train.csv"
    labels = sorted(pd.read_csv(data_dir / "sources.csv")["label"].unique())
    base = DynamicMixingDataset(csv, data_dir, cfg["data"])
    queries = QueryDataset(base, labels, negatives=1, return_meta=True)
    code = 2 * len(queries) + 3 * 3 + 1  # epoch 2, mixture 3, slot 1
    (mixture, query), target, meta = queries[code]
    drawn = base.view(2, 3)
    assert meta["mixture_id"] == drawn["mixture_id"] and torch.equal(mixture, base[2 * len(base) + 3][0])
    if meta["target"] >= 0:
        assert labels[query] == drawn[f"label_{meta['target']}"]
    again = QueryDataset(DynamicMixingDataset(csv, data_dir, cfg["data"]), labels, negatives=1)[code]
    assert torch.equal(again[0][0], mixture) and again[0][1] == query and torch.equal(again[1], target)


def test_example_clips_come_from_another_file_of_the_queried_category_and_held_out_ones_are_never_queried(tiny_data):
    """Query by example: each item's clip is the loudest second of another file of its category in the same split;
    a held-out category is never a query (its slot queries an absent category), though its sounds stay in the
    mixtures."""
    from local.data.queries import ExamplePool, loudest_window
    from local.data.views import split_candidates

    data_dir, cfg = tiny_data
    sources, root = load_sources(data_dir)
    base = ViewDataset(views_dir(data_dir, 2) / "train.csv", root)
    candidates = split_candidates(sources, cfg["data"])["train"]
    labels = sorted(candidates)
    held = labels[0]
    pool = ExamplePool(candidates, root, base.sample_rate, 0.25, base.cache)
    queries = QueryDataset(base, [label for label in labels if label != held], negatives=1, return_meta=True,
                           examples=pool, held_out=[held])
    files = {row["path"]: row["label"] for rows in candidates.values() for row in rows}
    held_in_mixtures = 0
    for code in range(len(queries)):
        (mixture, clip), target, meta = queries[code]
        assert clip.shape == (2000,) and meta["query"] != held and files[meta["example"]] == meta["query"]
        if meta["target"] >= 0:
            assert meta["example"] != meta[f"path_{meta['target']}"]
        held_in_mixtures += held in (meta["label_0"], meta["label_1"])
    assert held_in_mixtures > 0
    audio = torch.cat([torch.zeros(1000), torch.ones(300), torch.zeros(3000)])
    window = loudest_window(audio, 800)
    assert len(window) == 800 and window.sum() == 300  # the loud part lies inside the window
    assert len(loudest_window(torch.ones(100), 800)) == 800

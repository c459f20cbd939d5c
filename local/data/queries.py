"""Query items for category-queried extraction (issue 23): a mixture, and the label of the one sound to extract.

Conditioned extraction (Ochiai et al., "Listen to What You Want: Neural Network-based Universal Sound Selector",
Interspeech 2020) trains on (mixture, query, target) triples. The views already carry every source's label, so
the triples come from them: each mixture gives `n_src` positive items, every source once as the target, queried by
its label, in a seeded order, and `negatives` negative items, each a label of the dataset that is not in the
mixture, whose target is silence (a query for an absent sound must return nothing).

Item k of a dataset with s = n_src + negatives slots per mixture is (mixture k // s, slot k % s). The slot order
and the negative labels come from their own stream ("queries", seed, epoch, mixture), so fixed views and dynamic
mixing (local/data/dynamic_mixing.py: a new mixture per item and epoch) share one rule, and a resumed epoch
replays the same items. Target index -1 marks a negative item.

Query by example (issue 23 item 3): with an `ExamplePool`, each item also carries a clip of the queried category,
the loudest `seconds` of another file of that category in the same split (another file than the target's, where
the category has one), chosen in the stream ("query_examples", seed, epoch, mixture, slot). `held_out` categories
are never queried in training (their sounds stay in the mixtures as interference): their slots query an absent
category instead, so that a model can be tested on categories it never extracted (the few-shot case).
"""
from pathlib import Path

import torch
from torch.utils.data import Dataset

from local.common import seeding
from local.common.errors import RecipeError


def query_slots(labels, row_labels, negatives, seed, epoch, mixture, held_out=()):
    """[(target index or -1, query label)] of one mixture: its sources in a seeded order, then `negatives`
    labels of `labels` absent from `row_labels` (drawn without replacement where there are enough). A source of a
    `held_out` category is not queried: its slot becomes one more negative."""
    rng = seeding.stream("queries", seed, epoch, mixture)
    order = [int(i) for i in rng.permutation(len(row_labels))]
    positives = [(i, row_labels[i]) for i in order if row_labels[i] not in held_out]
    n_negative = negatives + len(row_labels) - len(positives)
    absent = [label for label in labels if label not in set(row_labels) and label not in held_out]
    if n_negative and not absent:
        raise RecipeError(f"mixture {mixture}: every label of the dataset is in it, so no negative query exists; "
                          f"set data.query_negatives to 0 or use a dataset with more categories than n_src")
    picks = rng.choice(len(absent), size=n_negative, replace=n_negative > len(absent)) if n_negative else []
    return positives + [(-1, absent[int(j)]) for j in picks]


class ExamplePool:
    """Example clips of each category of a split: the loudest `seconds` of a file, read at the views' rate.

    Args:
        candidates: {label: [sources.csv row, ...]} of one split (local/data/views.py split_candidates).
        root: the dataset root; sample_rate: the views' rate; cache: the dataset's SourceCache or None."""

    def __init__(self, candidates, root, sample_rate, seconds, cache=None):
        self.candidates, self.root, self.sample_rate, self.cache = candidates, Path(root), int(sample_rate), cache
        self.length = int(round(float(seconds) * self.sample_rate))

    def clip(self, label, rng, exclude=None):
        """(clip [length], path) of another file of `label` than `exclude`, where it has one."""
        from local.data.audio import read_segment

        rows = self.candidates.get(label) or []
        if not rows:
            raise RecipeError(f"query by example: no file of category {label!r} in this split")
        others = [row for row in rows if row["path"] != exclude] or rows
        row = others[int(rng.integers(len(others)))]
        audio = read_segment(self.root / row["path"], 0, int(row["num_samples"]), self.sample_rate, cache=self.cache)
        return loudest_window(audio, self.length), row["path"]


def loudest_window(audio, length, hop=80):
    """The `length` samples of `audio` around its loudest `hop`-sample frame (zero-padded when shorter)."""
    if len(audio) <= length:
        return torch.nn.functional.pad(audio, (0, length - len(audio)))
    frames = audio[: len(audio) // hop * hop].reshape(-1, hop).pow(2).sum(-1)
    centre = int(frames.argmax()) * hop + hop // 2
    start = min(max(0, centre - length // 2), len(audio) - length)
    return audio[start : start + length]


class QueryDataset(Dataset):
    """Items ((mixture [T], query label index), target [T]) of a view dataset, the layout training batches take
    (inputs, targets); with `return_meta`, also a dict with the view row, the query label and the target index
    (-1: negative, the target is silence).

    Args:
        base: a ViewDataset (fixed views) or a DynamicMixingDataset (indexed epoch * len + i by its sampler).
        labels: every label a query may name (the training categories), in the order of the label indices.
        negatives: negative items per mixture.
        seed: seeds the slot order and the negative labels.
        examples: an ExamplePool: the query is an example clip [L] of the category instead of its label index.
        held_out: categories never queried (training for the few-shot case).
        tags: the inputs carry a third element, the mixture's categories as a multi-hot vector [len(labels)]: the
            targets of a tagging presence gate (local/models/query_lstm.py, `presence_head: tagger`), every label of
            the mixture and not only the queried one.
    """

    def __init__(self, base, labels, negatives=1, seed=0, return_meta=False, examples=None, held_out=(), tags=False):
        self.base, self.labels, self.negatives, self.seed = base, list(labels), int(negatives), int(seed)
        self.examples, self.held_out, self.tags = examples, tuple(held_out), bool(tags)
        self.index = {label: i for i, label in enumerate(self.labels)}
        self.slots = base.n_src + self.negatives
        self.dynamic = hasattr(base, "drawn")
        self.return_meta = return_meta
        self._last = None  # (key, (row, mixture, sources)) of the last mixture read
        if self.negatives < 0:
            raise RecipeError(f"data.query_negatives must be >= 0, got {negatives}")

    def __len__(self):
        return len(self.base) * self.slots

    def _mixture(self, epoch, mixture_index):
        """(row, mixture, sources) of one mixture, the last one kept: training batches hold the slots of a mixture
        one after another (local/training/resumable.py `group`), so it is read and mixed once for all of them."""
        key = (epoch, mixture_index)
        if self._last is None or self._last[0] != key:
            if self.dynamic:
                drawn = self.base.drawn(epoch, mixture_index)
            else:
                row = self.base.df.iloc[mixture_index].to_dict()
                drawn = (row, *self.base.mix(row, mixture_index))
            self._last = (key, drawn)
        return self._last[1]

    def __getitem__(self, code):
        epoch, index = divmod(int(code), len(self))
        mixture_index, slot = divmod(index, self.slots)
        row, mixture, sources = self._mixture(epoch, mixture_index)
        row_labels = [row[f"label_{i}"] for i in range(self.base.n_src)]
        unknown = [label for label in row_labels if label not in self.index and label not in self.held_out]
        if unknown:
            raise RecipeError(f"{self.base.csv_path}: mixture {row['mixture_id']} has labels {unknown} that no query "
                              f"names (known: {', '.join(self.labels)})")
        target, query = query_slots(self.labels, row_labels, self.negatives, self.seed, epoch, mixture_index,
                                    self.held_out)[slot]
        reference = sources[target] if target >= 0 else torch.zeros_like(mixture)
        meta = {**row, "query": query, "target": target}
        if self.examples is None:
            condition = self.index[query]
        else:
            rng = seeding.stream("query_examples", self.seed, epoch, mixture_index, slot)
            condition, meta["example"] = self.examples.clip(query, rng, row[f"path_{target}"] if target >= 0 else None)
        inputs = (mixture, condition)
        if self.tags:
            present = torch.zeros(len(self.labels))
            present[[self.index[label] for label in row_labels if label in self.index]] = 1.0
            inputs = (mixture, condition, present)
        if self.return_meta:
            return inputs, reference, meta
        return inputs, reference

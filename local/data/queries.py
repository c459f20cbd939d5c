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
"""
import torch
from torch.utils.data import Dataset

from local.common import seeding
from local.common.errors import RecipeError


def query_slots(labels, row_labels, negatives, seed, epoch, mixture):
    """[(target index or -1, query label)] of one mixture: its sources in a seeded order, then `negatives`
    labels of `labels` absent from `row_labels` (drawn without replacement where there are enough)."""
    rng = seeding.stream("queries", seed, epoch, mixture)
    order = rng.permutation(len(row_labels))
    absent = [label for label in labels if label not in set(row_labels)]
    if negatives and not absent:
        raise RecipeError(f"mixture {mixture}: every label of the dataset is in it, so no negative query exists; "
                          f"set data.query_negatives to 0 or use a dataset with more categories than n_src")
    picks = rng.choice(len(absent), size=negatives, replace=negatives > len(absent)) if negatives else []
    return [(int(i), row_labels[i]) for i in order] + [(-1, absent[int(j)]) for j in picks]


class QueryDataset(Dataset):
    """Items (mixture [T], query label index, target [T]) of a view dataset; with `return_meta`, also a dict with
    the view row, the query label and the target index (-1: negative, the target is silence).

    Args:
        base: a ViewDataset (fixed views) or a DynamicMixingDataset (indexed epoch * len + i by its sampler).
        labels: every label a query may name (the training categories), in the order of the label indices.
        negatives: negative items per mixture.
        seed: seeds the slot order and the negative labels.
    """

    def __init__(self, base, labels, negatives=1, seed=0, return_meta=False):
        self.base, self.labels, self.negatives, self.seed = base, list(labels), int(negatives), int(seed)
        self.index = {label: i for i, label in enumerate(self.labels)}
        self.slots = base.n_src + self.negatives
        self.dynamic = hasattr(base, "drawn")
        self.return_meta = return_meta
        if self.negatives < 0:
            raise RecipeError(f"data.query_negatives must be >= 0, got {negatives}")

    def __len__(self):
        return len(self.base) * self.slots

    def __getitem__(self, code):
        epoch, index = divmod(int(code), len(self))
        mixture_index, slot = divmod(index, self.slots)
        if self.dynamic:
            row, mixture, sources = self.base.drawn(epoch, mixture_index)
        else:
            row = self.base.df.iloc[mixture_index].to_dict()
            mixture, sources = self.base.mix(row, mixture_index)
        row_labels = [row[f"label_{i}"] for i in range(self.base.n_src)]
        unknown = [label for label in row_labels if label not in self.index]
        if unknown:
            raise RecipeError(f"{self.base.csv_path}: mixture {row['mixture_id']} has labels {unknown} that no query "
                              f"names (known: {', '.join(self.labels)})")
        target, query = query_slots(self.labels, row_labels, self.negatives, self.seed, epoch, mixture_index)[slot]
        reference = sources[target] if target >= 0 else torch.zeros_like(mixture)
        if self.return_meta:
            return mixture, self.index[query], reference, {**row, "query": query, "target": target}
        return mixture, self.index[query], reference

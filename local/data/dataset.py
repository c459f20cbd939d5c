"""`ViewDataset`: builds each mixture on the fly from one view CSV row.

Only the needed segment of each source file is read (soundfile partial reads, local/data/audio.py); a file
that is compressed, not mono or at another rate is read from its decoded and resampled copy in the source
cache (local/data/source_cache.py), built once. Each segment is scaled by its gain and placed
at its offset, and the mixture is the exact sum of the returned sources. STFTs happen in the model.
"""
from pathlib import Path

import pandas as pd
import torch
from torch.utils.data import Dataset

from local.common.errors import RecipeError
from local.data.audio import read_segment
from local.data.source_cache import SourceCache
from local.data.view_csv import check_views, n_sources_of


class ViewDataset(Dataset):
    """Mixtures of a view CSV: item -> (mixture [T], sources [n_src, T]) as float32 tensors.

    Args:
        csv_path: a view CSV written by stage 1.
        root: the dataset root the CSV's paths are relative to.
        resample: resample files whose rate differs from the view's (otherwise refuse them).
        return_meta: also return the CSV row as a dict (evaluation uses the labels and ids).
        cache: a `SourceCache`; by default the one of the dataset the CSV belongs to (data/<dataset>/cache).
    """

    def __init__(self, csv_path, root, resample=True, return_meta=False, cache="auto"):
        self.csv_path = Path(csv_path)
        if not self.csv_path.is_file():
            raise RecipeError(f"view CSV {self.csv_path} not found: run stage 1 first")
        self.df = pd.read_csv(self.csv_path, keep_default_na=False)
        self.n_src = n_sources_of(self.df.columns)
        if self.n_src == 0 or "length" not in self.df.columns:
            raise RecipeError(f"{self.csv_path} is not a view CSV (no path_0 / length columns); re-run stage 1")
        check_views(self.df, self.csv_path, root)
        rates = self.df["sample_rate"].unique()
        if len(rates) != 1:
            raise RecipeError(f"{self.csv_path} mixes sample rates {sorted(rates)}; a view CSV has one rate")
        self.sample_rate = int(rates[0])
        self.root = Path(root)
        self.resample = resample
        self.return_meta = return_meta
        self.cache = SourceCache.for_views(self.csv_path, self.sample_rate) if cache == "auto" else cache

    def __len__(self):
        return len(self.df)

    def _read_segment(self, row_index, path, start, end):
        """Samples [start, end) of a file (mono, at the view's rate), or an error naming the row and file."""
        return read_segment(path, start, end, self.sample_rate, self.resample,
                            where=f"{self.csv_path} row {row_index + 2}", cache=self.cache)  # +2: header, 1-based

    def __getitem__(self, index):
        row = self.df.iloc[index]
        mixture, sources = self.mix(row, index)
        if self.return_meta:
            return mixture, sources, row.to_dict()
        return mixture, sources

    def mix(self, row, index, perturb=None):
        """(mixture [T], sources [n_src, T]) of one view row (`index` names the CSV row in errors); `perturb`
        (segment -> segment) changes each source before its gain (local/data/augmentation.py)."""
        length = int(row["length"])
        sources = torch.zeros(self.n_src, length)
        for i in range(self.n_src):
            segment = self._read_segment(index, self.root / row[f"path_{i}"], int(row[f"start_{i}"]), int(row[f"end_{i}"]))
            if perturb is not None:
                segment = perturb(segment)
            offset = int(row[f"mix_start_{i}"])
            segment = segment[: length - offset] * float(10 ** (row[f"gain_db_{i}"] / 20))
            sources[i, offset : offset + len(segment)] = segment
        return sources.sum(dim=0), sources

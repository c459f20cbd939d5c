"""Benchmark: does the view storage (mixtures built on the fly from a CSV) cost loader throughput,
compared with precomputed STFT arrays, and how much disk does it save?

    python -m local.benchmarks.storage [--tag lstm_2src_sisdr] [--n 600] [--out exp_bench/storage.json]

Run it from the directory whose data/ holds the prepared views (after `./run.sh --stop_stage 1`).
Both schemes serve the same first N training views:

- view: `ViewDataset` reads the needed segments of the source files, scales, places and sums them
  (waveforms out; the model computes the STFT). Also measured with the STFT computed in the loader,
  so that both schemes hand out the same thing.
- npy: the scheme the category study used first: per mixture one `.npy` file holding the complex STFT
  of the mixture and of each source [n_src + 1, F, frames] (complex64, the config's filterbank), made
  once from the views (creation time measured) and loaded with np.load.

Items per second with 0 and 2 loader workers (batch of the config, one pass, after a warm-up batch),
creation time, and bytes on disk (the source audio both schemes start from is listed apart). The npy
files were just written, so both schemes read from the page cache: the comparison is of CPU work.
"""
import argparse
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from local.common import io_utils
from local.common.config import load_config
from local.data.dataset import ViewDataset
from local.data.sources import load_sources


class STFTOf(Dataset):
    """Wraps a waveform dataset and returns complex STFTs [n_src + 1, F, frames], like the npy scheme."""

    def __init__(self, dataset, n_fft, hop):
        self.dataset, self.n_fft, self.hop = dataset, n_fft, hop

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        mixture, sources = self.dataset[index]
        return stft(torch.cat([mixture[None], sources]), self.n_fft, self.hop)


class NpyDataset(Dataset):
    def __init__(self, files):
        self.files = files

    def __len__(self):
        return len(self.files)

    def __getitem__(self, index):
        return torch.from_numpy(np.load(self.files[index]))


def stft(signals, n_fft, hop):
    return torch.stft(signals, n_fft, hop_length=hop, window=torch.hann_window(n_fft), return_complex=True)


def make_npy(dataset, folder, n_fft, hop):
    """Precompute the npy scheme from the views; returns the file list."""
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for index in range(len(dataset)):
        mixture, sources = dataset[index]
        path = folder / f"{index:06d}.npy"
        np.save(path, stft(torch.cat([mixture[None], sources]), n_fft, hop).numpy().astype(np.complex64))
        files.append(path)
    return files


def items_per_second(dataset, batch_size, workers):
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                        generator=torch.Generator().manual_seed(0))
    iterator = iter(loader)
    warm = next(iterator)  # worker start-up and first reads are not part of the rate
    start, count = time.perf_counter(), 0
    for batch in iterator:
        count += len(batch[0]) if isinstance(batch, (list, tuple)) else len(batch)
    del warm
    return round(count / (time.perf_counter() - start), 1)


def folder_bytes(paths):
    return sum(Path(p).stat().st_size for p in paths)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tag", default="lstm_2src_sisdr")
    parser.add_argument("--n", type=int, default=600, help="training views used by both schemes")
    parser.add_argument("--data_root", default="data")
    parser.add_argument("--work", default="exp_bench/storage_npy", help="where the npy files go (deleted after)")
    parser.add_argument("--out", default="exp_bench/storage.json")
    args = parser.parse_args(argv)
    cfg = load_config(args.tag)
    data_dir = Path(args.data_root) / cfg["data"]["dataset"]
    sources_df, root = load_sources(data_dir)
    views_csv = data_dir / f"{cfg['data']['n_src']}src" / "train.csv"
    full = ViewDataset(views_csv, root)
    view = Subset(full, range(min(args.n, len(full))))
    n_fft, hop, batch = (int(cfg["filterbank"]["n_filters"]), int(cfg["filterbank"]["stride"]),
                         int(cfg["training"]["batch_size"]))

    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    start = time.perf_counter()
    files = make_npy(view, work, n_fft, hop)
    creation = time.perf_counter() - start
    npy = NpyDataset(files)

    result = {"tag": args.tag, "n_mixtures": len(view), "n_src": full.n_src, "sample_rate": full.sample_rate,
              "mixture_seconds": cfg["data"]["mixture_seconds"], "batch_size": batch, "cpu_cores": os.cpu_count(),
              "npy_creation_seconds": round(creation, 1), "view_creation_seconds": "stage 1 (CSV only)"}
    # The view CSV rows of these mixtures: its bytes scaled to the N rows used.
    csv_bytes = views_csv.stat().st_size * len(view) / len(full)
    source_files = {root / p for p in sources_df["path"]}
    result["bytes"] = {"view_csv": int(csv_bytes), "npy": folder_bytes(files),
                       "source_audio_shared_by_both": folder_bytes(source_files)}
    result["disk_ratio_npy_over_view"] = round(result["bytes"]["npy"] / csv_bytes, 1)
    for workers in (0, 2):
        rates = {"view_waveforms": items_per_second(view, batch, workers),
                 "view_with_stft": items_per_second(STFTOf(view, n_fft, hop), batch, workers),
                 "npy_stft": items_per_second(npy, batch, workers)}
        rates["ratio_view_with_stft_over_npy"] = round(rates["view_with_stft"] / rates["npy_stft"], 3)
        rates["ratio_view_waveforms_over_npy"] = round(rates["view_waveforms"] / rates["npy_stft"], 3)
        result[f"items_per_second_{workers}_workers"] = rates
    shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result, indent=2))
    io_utils.write_json(result, Path(args.out))
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()

"""Benchmark: how long a training epoch takes on a folder of 44.1-48 kHz files, with and without the source cache,
next to the same epoch on synth (8 kHz WAV files, read directly), side by side in one run (issue 20).

    python -m local.benchmarks.epoch_time --folder egs/debian_sounds/data/debian_sounds [--synth data/synth]
        [--tag lstm_2src_sisdr] [--repeats 2] [--out exp/benchmarks/epoch_time.json]

Both datasets must have been through stage 1 for the tag's view settings (`./run.sh --stop_stage 1`, and the
folder's recipe with the same), so the views exist and the folder's cache is built. For each setting it times
(a) reading the epoch's training mixtures through the training DataLoader (the config's batch size and
workers) and (b) a training epoch: the same loader plus the model's forward, backward and optimizer step with the
config's loss. Settings alternate within each repeat, so a drift of this machine's speed hits all of them alike.
Run it alone.
"""
import argparse
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from local.benchmarks import publish
from local.common.config import load_config
from local.common.errors import exit_on_recipe_error
from local.data.dataset import ViewDataset
from local.data.sources import load_sources
from local.data.view_csv import views_dir
from local.models import build_model
from local.training.losses import batch_loss, make_loss


def _loader(data_dir, cfg, cached):
    _, root = load_sources(data_dir)
    csv = views_dir(data_dir, cfg["data"]["n_src"], cfg["data"].get("n_classes"),
                    cfg["data"].get("mixing_policy", "t0")) / "train.csv"
    dataset = ViewDataset(csv, root, cache="auto" if cached else None)
    return DataLoader(dataset, batch_size=int(cfg["training"]["batch_size"]), shuffle=True, drop_last=True,
                      num_workers=int(cfg["training"]["num_workers"]), generator=torch.Generator().manual_seed(0))


def read_epoch(loader):
    start = time.perf_counter()
    for _ in loader:
        pass
    return time.perf_counter() - start


def train_epoch(loader, cfg):
    torch.manual_seed(0)
    model, loss = build_model(cfg), make_loss(cfg)
    optimizer = torch.optim.Adam(model.parameters(), lr=float(cfg["optim"]["lr"]))
    start = time.perf_counter()
    for mixture, sources in loader:
        optimizer.zero_grad()
        value = batch_loss(loss, model, mixture, sources)
        value.backward()
        optimizer.step()
    return time.perf_counter() - start


@exit_on_recipe_error
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--folder", required=True, help="a prepared dataset of 44.1-48 kHz files (data/<dataset>)")
    parser.add_argument("--synth", default="data/synth")
    parser.add_argument("--tag", default="lstm_2src_sisdr")
    parser.add_argument("--repeats", type=int, default=2, choices=range(1, 11), metavar="1..10")
    parser.add_argument("--out", default="exp/benchmarks/epoch_time.json")
    args = parser.parse_args(argv)
    cfg = load_config(args.tag)
    settings = {"synth": (Path(args.synth), True), "folder_cached": (Path(args.folder), True),
                "folder_uncached": (Path(args.folder), False)}
    times = {name: {"read": [], "train": []} for name in settings}
    for repeat in range(args.repeats):
        for name, (data_dir, cached) in settings.items():
            loader = _loader(data_dir, cfg, cached)
            times[name]["read"].append(read_epoch(loader))
            times[name]["train"].append(train_epoch(loader, cfg))
            print(f"repeat {repeat + 1}/{args.repeats} {name:16s} read {times[name]['read'][-1]:6.1f} s  "
                  f"train epoch {times[name]['train'][-1]:6.1f} s ({len(loader)} steps)", flush=True)
    best = {name: {k: round(min(v), 2) for k, v in t.items()} for name, t in times.items()}
    result = {"tag": args.tag, "folder": str(args.folder), "synth": str(args.synth), "threads": torch.get_num_threads(),
              "num_workers": int(cfg["training"]["num_workers"]), "batch_size": int(cfg["training"]["batch_size"]),
              "seconds_min_over_repeats": best, "seconds": times,
              "train_epoch_ratio_folder_cached_to_synth":
                  round(best["folder_cached"]["train"] / best["synth"]["train"], 3),
              "train_epoch_ratio_folder_uncached_to_synth":
                  round(best["folder_uncached"]["train"] / best["synth"]["train"], 3)}
    for name, b in best.items():
        print(f"{name:16s} read {b['read']:6.1f} s   train epoch {b['train']:6.1f} s "
              f"({b['train'] / best['synth']['train']:.2f} x synth)")
    publish(result, args.out)


if __name__ == "__main__":
    main()

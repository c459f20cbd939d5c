"""Benchmark: parameter count and training throughput of every model family at its default config.

    python -m local.benchmark_models [--n_src 2] [--steps 5] [--out exp/benchmarks/models.json]

Throughput is mixtures per second for a forward and backward pass (loss: the config's, here the
default euclidean) on batches of the config's size and mixture length, after one warm-up step,
on whatever device torch uses by default (CPU here). It prints a table and writes JSON.
"""
import argparse
import json
import time
from pathlib import Path

import torch

from local import io_utils
from local.config import load_config
from local.losses import make_loss
from local.models import build_model, count_parameters

CATEGORY_MODELS = ("lstm", "vtf", "gab", "drnn", "srnn")


def measure(tag, steps):
    cfg = load_config(tag)
    model, loss = build_model(cfg), make_loss(cfg)
    batch, n_src = int(cfg["training"]["batch_size"]), int(cfg["data"]["n_src"])
    length = int(cfg["data"]["mixture_seconds"] * cfg["data"]["sample_rate"])
    generator = torch.Generator().manual_seed(0)
    sources = torch.randn(batch, n_src, length, generator=generator) * 0.05
    mixture = sources.sum(1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step():
        optimizer.zero_grad()
        loss(model(mixture), sources).backward()
        optimizer.step()

    step()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = time.perf_counter() - start
    return {"tag": tag, "model": cfg["model"]["name"], "n_parameters": count_parameters(model), "batch_size": batch,
            "mixture_seconds": cfg["data"]["mixture_seconds"], "train_mixtures_per_second": round(batch * steps / seconds, 2)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n_src", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--out", default="exp/benchmarks/models.json")
    args = parser.parse_args(argv)
    rows = [measure(f"{name}_{args.n_src}src", args.steps) for name in CATEGORY_MODELS]
    print(f"{'model':<6} {'parameters':>12} {'train mixtures/s':>17}   (batch, {rows[0]['mixture_seconds']} s mixtures, "
          f"{torch.get_num_threads()} threads)")
    for r in rows:
        print(f"{r['model']:<6} {r['n_parameters']:>12,} {r['train_mixtures_per_second']:>17.1f}")
    io_utils.write_json({"threads": torch.get_num_threads(), "results": rows}, Path(args.out))
    print(f"wrote {args.out}")
    return json.loads(json.dumps(rows))


if __name__ == "__main__":
    main()

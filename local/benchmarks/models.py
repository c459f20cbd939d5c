"""Benchmark: parameter count and training throughput of every model family at its default config.

    python -m local.benchmarks.models [--tags lstm_2src ...] [--steps 5] [--out exp/benchmarks/models.json]

Throughput is mixtures per second for a forward and backward pass and an optimizer step (the
config's loss) on batches of the config's size and training mixture length, after one warm-up step,
on whatever device torch uses by default (CPU here). Default tags: the category models at 2
sources and the three reduced-size speaker models. It prints a table and writes JSON.
"""
import argparse
import json
import time
from pathlib import Path

import torch

from local.common import io_utils
from local.common.config import load_config
from local.models import build_model, count_parameters
from local.training.losses import batch_loss, make_loss

DEFAULT_TAGS = ("lstm_2src", "vtf_2src", "stt_2src", "gab_2src", "drnn_2src", "srnn_2src", "sudormrf_2src",
                "conv_tasnet_2src", "dpcl_dprnn_2spk_small",
                "chimera_dprnn_2spk_small", "dprnn_tasnet_2spk_small")


def measure(tag, steps):
    cfg = load_config(tag)
    model, loss = build_model(cfg), make_loss(cfg)
    batch, n_src = int(cfg["training"]["batch_size"]), int(cfg["data"]["n_src"])
    mixture_seconds = cfg["data"]["segment_seconds"] or cfg["data"]["mixture_seconds"]
    length = int(mixture_seconds * cfg["data"]["sample_rate"])
    generator = torch.Generator().manual_seed(0)
    sources = torch.randn(batch, n_src, length, generator=generator) * 0.05
    mixture = sources.sum(1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step():
        optimizer.zero_grad()
        value = batch_loss(loss, model, mixture, sources)
        value.backward()
        optimizer.step()

    step()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = time.perf_counter() - start
    return {"tag": tag, "model": cfg["model"]["name"], "n_parameters": count_parameters(model), "batch_size": batch,
            "mixture_seconds": mixture_seconds, "train_mixtures_per_second": round(batch * steps / seconds, 2)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tags", nargs="+", default=list(DEFAULT_TAGS))
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--out", default="exp/benchmarks/models.json")
    args = parser.parse_args(argv)
    rows = [measure(tag, args.steps) for tag in args.tags]
    print(f"{'tag':<26} {'parameters':>10} {'batch':>5} {'seconds':>7} {'train mixtures/s':>17}   "
          f"({torch.get_num_threads()} threads)")
    for r in rows:
        print(f"{r['tag']:<26} {r['n_parameters']:>10,} {r['batch_size']:>5} {r['mixture_seconds']:>7} "
              f"{r['train_mixtures_per_second']:>17.1f}")
    io_utils.write_json({"threads": torch.get_num_threads(), "results": rows}, Path(args.out))
    print(f"wrote {args.out}")
    return json.loads(json.dumps(rows))


if __name__ == "__main__":
    main()

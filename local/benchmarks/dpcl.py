"""Benchmark: memory of the deep-clustering loss, speed of batched k-means, sizes of the speaker models.

    python -m local.benchmarks.dpcl [--seconds 4] [--out exp/benchmarks/dpcl.json]

1. Peak memory of `deep_clustering_loss` (forward + backward) for one utterance of `--seconds` at
   8 kHz with the recipe's STFT (256/64) and D = 40, measured as the growth of this process's peak
   resident memory in a fresh subprocess; next to the naive affinity form, whose two N x N float32
   matrices are computed analytically when they cannot fit in memory (and measured when they can).
2. Time of the batched k-means (20 iterations) on those N embeddings.
3. Parameter counts of the speaker configs at paper and reduced sizes.
"""
import argparse
import json
import subprocess
import sys
import time

import torch

from local.common import io_utils

CHILD = r"""
import json, sys, torch
from local.training.losses import deep_clustering_loss
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            return int(line.split()[1]) * 1024
n, d, naive = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
torch.manual_seed(0)
v = torch.nn.functional.normalize(torch.randn(1, n, d), dim=-1).requires_grad_()
t = torch.randint(0, 2, (1, n)); w = torch.ones(1, n)
base = hwm()
if naive:
    y = torch.nn.functional.one_hot(t, 2).float()
    loss = ((v[0] @ v[0].T - y[0] @ y[0].T) ** 2).sum() / n ** 2
else:
    loss = deep_clustering_loss(v, t, w, 2)
loss.backward()
print(json.dumps({"peak_bytes": hwm() - base}))
"""


def child_peak(n, d, naive):
    out = subprocess.run([sys.executable, "-c", CHILD, str(n), str(d), "1" if naive else "0"], capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_bytes"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--out", default="exp/benchmarks/dpcl.json")
    args = parser.parse_args(argv)
    sr, n_fft, hop, dim = 8000, 256, 64, 40
    frames = (int(args.seconds * sr) + 2 * (n_fft - hop) - n_fft) // hop + 1
    n = (n_fft // 2 + 1) * frames
    result = {"seconds": args.seconds, "bins": n, "embedding_dim": dim}
    result["low_rank_peak_mb"] = round(child_peak(n, dim, naive=False) / 2**20, 1)
    naive_bytes = 2 * n * n * 4  # V V^T and Y Y^T in float32 (their difference and gradient need more)
    result["naive_affinity_analytic_mb"] = round(naive_bytes / 2**20, 1)
    with open("/proc/meminfo") as f:
        available = int(next(line for line in f if line.startswith("MemAvailable")).split()[1]) * 1024
    if 2 * naive_bytes < available:
        result["naive_affinity_peak_mb"] = round(child_peak(n, dim, naive=True) / 2**20, 1)
    else:
        result["naive_affinity_peak_mb"] = None  # does not fit: analytic only
    # batched k-means on the same number of bins
    from local.models.kmeans import batched_kmeans

    points = torch.nn.functional.normalize(torch.randn(1, n, dim), dim=-1)
    start = time.perf_counter()
    batched_kmeans(points, torch.ones(1, n), 2, 20)
    result["kmeans_seconds"] = round(time.perf_counter() - start, 3)
    from local.common.config import load_config
    from local.models import build_model, count_parameters

    result["parameters"] = {tag: count_parameters(build_model(load_config(tag))) for tag in
                            ["dpcl_dprnn_2spk", "chimera_dprnn_2spk", "dprnn_tasnet_2spk", "dpcl_dprnn_2spk_small",
                             "chimera_dprnn_2spk_small", "dprnn_tasnet_2spk_small"]}
    print(json.dumps(result, indent=2))
    io_utils.write_json(result, args.out)


if __name__ == "__main__":
    main()

"""Benchmark: deep clustering's SI-SDRi with one k-means start against several (`model.kmeans_restarts`).

    python -m local.benchmarks.kmeans --tag dpcl_dprnn_2spk_small [--exp_dir exp] [--restarts 1 10]
                                      [--max_mixtures 200] [--out exp_bench/kmeans_<tag>.json]

Run it from the directory holding data/ and the trained experiment. The same trained embeddings are
clustered with each number of restarts on the same test views; the result gives mean SI-SDRi for each,
the paired difference with its bootstrap interval, and the clustering time per mixture.
"""
import argparse
import os
import time

import numpy as np
import torch

from local.benchmarks import publish, trained_experiment
from local.evaluation.evaluate import best_permutation
from local.evaluation.metrics import si_sdr
from local.evaluation.uncertainty import bootstrap_ci, paired_difference


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tag", default="dpcl_dprnn_2spk_small")
    parser.add_argument("--exp_dir", default="exp")
    parser.add_argument("--data_root", default="data")
    parser.add_argument("--restarts", nargs="+", type=int, default=[1, 10])
    parser.add_argument("--max_mixtures", type=int, default=200)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    dataset, model = trained_experiment(args.tag, args.exp_dir, args.data_root)
    n = min(args.max_mixtures, len(dataset))
    scores, seconds = {r: [] for r in args.restarts}, {r: 0.0 for r in args.restarts}
    with torch.inference_mode():
        for index in range(n):
            mixture, sources = dataset[index]
            refs = sources.double().numpy()
            base = si_sdr(refs, np.broadcast_to(mixture.double().numpy(), refs.shape))
            for restarts in args.restarts:
                model.masker.kmeans_restarts = restarts
                t0 = time.time()
                estimates, _ = best_permutation(model(mixture[None])[0], sources)
                seconds[restarts] += time.time() - t0
                scores[restarts].append(float(np.mean(si_sdr(refs, estimates.double().numpy()) - base)))
            if (index + 1) % 50 == 0:
                print(f"  {index + 1}/{n} mixtures", flush=True)
    result = {"tag": args.tag, "n_mixtures": n, "cpu_cores": os.cpu_count()}
    for restarts in args.restarts:
        low, high = bootstrap_ci(scores[restarts])
        result[f"restarts_{restarts}"] = {"si_sdri": round(float(np.mean(scores[restarts])), 3),
                                          "si_sdri_ci95": [round(low, 3), round(high, 3)],
                                          "separation_seconds_per_mixture": round(seconds[restarts] / n, 4)}
    first, last = args.restarts[0], args.restarts[-1]
    result[f"difference_{last}_minus_{first}"] = paired_difference(scores[first], scores[last])
    return publish(result, args.out or f"exp_bench/kmeans_{args.tag}.json")


if __name__ == "__main__":
    main()

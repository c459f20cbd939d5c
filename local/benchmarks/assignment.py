"""Benchmark: SDR on the SI-SDR assignment (what stage 3 reports) against SDR on BSS-eval's own permutation
(what Asteroid's `get_metrics` reported before: mir_eval picks the SIR-maximising permutation itself).

    python -m local.benchmarks.assignment --tag lstm_5src [--exp_dir exp] [--max_mixtures 50]
                                          [--out exp_bench/assignment_<tag>.json]

Run it from the directory holding data/ and the trained experiment. For the first N test mixtures it
separates, reorders the estimates by SI-SDR (as stage 3 does), then computes mean SDR both ways with
fast_bss_eval (which picks the SIR-maximising permutation as mir_eval does, K^2 projections), and counts the
mixtures where the two permutations differ. The difference is how optimistic the
old SDR was; the paired interval says whether it is more than noise.
"""
import argparse
import os
import warnings

import numpy as np
import torch

from local.benchmarks import publish, trained_experiment
from local.evaluation.evaluate import best_permutation
from local.evaluation.uncertainty import paired_difference


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tag", required=True)
    parser.add_argument("--exp_dir", default="exp")
    parser.add_argument("--data_root", default="data")
    parser.add_argument("--max_mixtures", type=int, default=50)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    import fast_bss_eval

    from local.evaluation.metrics import one_torch_thread

    warnings.filterwarnings("ignore")
    dataset, model = trained_experiment(args.tag, args.exp_dir, args.data_root)
    fixed, own, differing = [], [], 0
    n = min(args.max_mixtures, len(dataset))
    with torch.inference_mode():
        for index in range(n):
            mixture, sources = dataset[index]
            estimates, permutation = best_permutation(model(mixture[None])[0], sources)
            refs, ests = sources.double().numpy(), estimates.double().numpy()
            with one_torch_thread():
                sdr_fixed, _, _ = fast_bss_eval.bss_eval_sources(torch.from_numpy(refs), torch.from_numpy(ests),
                                                                 compute_permutation=False)
                sdr_own, _, _, perm = fast_bss_eval.bss_eval_sources(torch.from_numpy(refs), torch.from_numpy(ests),
                                                                     compute_permutation=True)
            sdr_fixed, sdr_own, perm = sdr_fixed.numpy(), sdr_own.numpy(), perm.numpy()
            fixed.append(float(np.mean(sdr_fixed)))
            own.append(float(np.mean(sdr_own)))
            differing += int(list(perm) != list(range(len(refs))))
            print(f"  {index + 1}/{n}: SDR {fixed[-1]:.2f} on the SI-SDR assignment, {own[-1]:.2f} on BSS-eval's own",
                  flush=True)
    result = {"tag": args.tag, "n_src": dataset.n_src, "n_mixtures": n, "cpu_cores": os.cpu_count(),
              "sdr_on_si_sdr_assignment": round(float(np.mean(fixed)), 3),
              "sdr_on_bss_eval_permutation": round(float(np.mean(own)), 3),
              "optimism_db": paired_difference(fixed, own),
              "mixtures_with_another_permutation": differing}
    return publish(result, args.out or f"exp_bench/assignment_{args.tag}.json")


if __name__ == "__main__":
    main()

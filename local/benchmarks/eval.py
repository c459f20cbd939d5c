"""Benchmark: evaluation throughput per BSS-eval backend with --nj 1 and --nj 2, where the time goes, and
how far the two backends' figures are apart.

    python -m local.benchmarks.eval [--tag lstm_2src_sisdr] [--exp_dir exp] [--max_mixtures 100]
                                   [--backends fast_bss_eval pb_bss_eval] [--out exp_bench/eval.json]

Run it from the directory holding data/ and the trained experiment (after `./run.sh`). It evaluates
the experiment's best model on the first N test views into exp_bench/eval_<backend>_nj<N>/ (the
experiment's own eval/ is left alone) and reports mixtures per second, the speed-up of --nj 2, and the
shares of the wall time spent in the model, in the oracle masks and in the metrics (the metric share with
--nj 2 is the workers' CPU time over the wall time and two workers, so it can approach 1). It checks that
--nj 1 and --nj 2 write identical CSVs, and gives the largest per-source difference of SDR, SIR and SAR
between the backends.
"""
import argparse
import json
import os
import shutil
from pathlib import Path

import pandas as pd

from local.common import io_utils
from local.common.config import load_config
from local.data.sources import load_sources
from local.evaluation.evaluate import evaluate


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tag", default="lstm_2src_sisdr")
    parser.add_argument("--exp_dir", default="exp")
    parser.add_argument("--data_root", default="data")
    parser.add_argument("--max_mixtures", type=int, default=100)
    parser.add_argument("--backends", nargs="+", default=["fast_bss_eval", "pb_bss_eval"])
    parser.add_argument("--nj", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--out", default="exp_bench/eval.json")
    args = parser.parse_args(argv)
    cfg = load_config(args.tag)
    data_dir = Path(args.data_root) / cfg["data"]["dataset"]
    _, root = load_sources(data_dir)
    views = data_dir / f"{cfg['data']['n_src']}src"
    result = {"tag": args.tag, "n_mixtures": args.max_mixtures, "cpu_cores": os.cpu_count()}
    bench = Path(args.out).parent
    for backend in args.backends:
        cfg = load_config(args.tag, [f"eval.max_mixtures={args.max_mixtures}", f"eval.bss_backend={backend}"])
        for nj in args.nj:
            out = bench / f"eval_{backend}_nj{nj}"
            shutil.rmtree(out, ignore_errors=True)  # a fresh evaluation, not a continued one
            summary = evaluate(cfg, Path(args.exp_dir) / args.tag, views, root, nj=nj, out_dir=out)
            wall = summary["eval_seconds"]
            result[f"{backend}_nj{nj}"] = {
                "eval_seconds": wall, "mixtures_per_second": round(summary["n_mixtures"] / wall, 2),
                "model_share": round(summary["model_seconds"] / wall, 3),
                "oracle_share": round(summary["oracle_seconds"] / wall, 3),
                "metric_share": round(summary["metric_seconds"] / (wall * nj), 3),
                **{k: summary.get(k) for k in ("si_sdri", "sdri", "sir", "sar", "oracle_psm_si_sdri",
                                              "oracle_ibm_si_sdri", "oracle_ratio_si_sdri")},
            }
        if len(args.nj) > 1:
            first, *others = [bench / f"eval_{backend}_nj{nj}" for nj in args.nj]
            result[f"{backend}_identical_csv_for_any_nj"] = all(
                (first / f).read_bytes() == (o / f).read_bytes()
                for o in others for f in ("metrics.csv", "per_source.csv"))
            result[f"{backend}_speedup_nj{args.nj[-1]}"] = round(
                result[f"{backend}_nj{args.nj[0]}"]["eval_seconds"]
                / result[f"{backend}_nj{args.nj[-1]}"]["eval_seconds"], 2)
    if len(args.backends) == 2:
        a, b = (pd.read_csv(bench / f"eval_{backend}_nj{args.nj[0]}" / "per_source.csv") for backend in args.backends)
        result["backend_max_abs_difference_db"] = {k: float((a[k] - b[k]).abs().max()) for k in ("sdr", "sir", "sar")}
    print(json.dumps(result, indent=2))
    io_utils.write_json(result, Path(args.out))
    print(f"wrote {args.out}")
    return json.loads(json.dumps(result))


if __name__ == "__main__":
    main()

"""Benchmark: evaluation throughput with --nj 1 and --nj 2, and where the time goes.

    python -m local.benchmarks.eval [--tag lstm_2src_sisdr] [--exp_dir exp] [--max_mixtures 100]
                                   [--out exp_bench/eval.json]

Run it from the directory holding data/ and the trained experiment (after `./run.sh`). It evaluates
the experiment's best model on the first N test views into exp_bench/eval_nj<N>/ (the experiment's
own eval/ is left alone) and reports mixtures per second, the speed-up of --nj 2, and the shares of
the wall time spent in the model, in the oracle masks and in the metrics (the metric share with
--nj 2 is the workers' CPU time over the wall time and two workers, so it can approach 1).
"""
import argparse
import json
import os
import shutil
from pathlib import Path

from local.common import io_utils
from local.common.config import load_config
from local.evaluation.evaluate import evaluate
from local.data.sources import load_sources


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tag", default="lstm_2src_sisdr")
    parser.add_argument("--exp_dir", default="exp")
    parser.add_argument("--data_root", default="data")
    parser.add_argument("--max_mixtures", type=int, default=100)
    parser.add_argument("--out", default="exp_bench/eval.json")
    args = parser.parse_args(argv)
    cfg = load_config(args.tag, [f"eval.max_mixtures={args.max_mixtures}"])
    data_dir = Path(args.data_root) / cfg["data"]["dataset"]
    _, root = load_sources(data_dir)
    views = data_dir / f"{cfg['data']['n_src']}src"
    result = {"tag": args.tag, "n_mixtures": args.max_mixtures, "cpu_cores": os.cpu_count()}
    for nj in (1, 2):
        out = Path(args.out).parent / f"eval_nj{nj}"
        shutil.rmtree(out, ignore_errors=True)  # a fresh evaluation, not a continued one
        summary = evaluate(cfg, Path(args.exp_dir) / args.tag, views, root, nj=nj, out_dir=out)
        wall = summary["eval_seconds"]
        result[f"nj{nj}"] = {
            "eval_seconds": wall, "mixtures_per_second": round(summary["n_mixtures"] / wall, 2),
            "model_share": round(summary["model_seconds"] / wall, 3),
            "oracle_share": round(summary["oracle_seconds"] / wall, 3),
            "metric_share": round(summary["metric_seconds"] / (wall * nj), 3),
            "si_sdri": summary["si_sdri"], "oracle_irm_si_sdri": summary["oracle_irm_si_sdri"],
            "oracle_ibm_si_sdri": summary["oracle_ibm_si_sdri"],
        }
    result["speedup_nj2"] = round(result["nj1"]["eval_seconds"] / result["nj2"]["eval_seconds"], 2)
    same = all((Path(args.out).parent / "eval_nj1" / f).read_bytes() == (Path(args.out).parent / "eval_nj2" / f).read_bytes()
               for f in ("metrics.csv", "per_source.csv"))
    result["identical_csv"] = same
    print(json.dumps(result, indent=2))
    io_utils.write_json(result, Path(args.out))
    print(f"wrote {args.out}")
    return json.loads(json.dumps(result))


if __name__ == "__main__":
    main()

"""Benchmark: label-queried extraction against separate-then-pick at equal training time (issue 23).

    python -m local.benchmarks.extraction --n_src 2 5 --minutes 10 --work exp/benchmarks/extraction

For each number of sources n, trains `query_lstm_<n>src` and `lstm_<n>src_sisdr` (the same masker, separating all n
sources with SI-SDR under PIT) for `--minutes` of training each (stages 0-2 of `--recipe`, same seed and views,
`training.max_minutes`, no early stop), then evaluates the query model with `eval.pick_baseline` set to the
separator (local/evaluation/query_eval.py): SI-SDRi on positive queries, the separator's best output for the same
queries (the oracle pick) and their paired difference, the negatives' level and the share above -20 dB. Budgets are
wall-clock minutes of this machine's CPU: run it alone. Run again in the same `--work`, it reuses finished runs.
Writes JSON (default egs/synth/extraction_gate.json), one row per source count and query options with the command that
made it; rows of other source counts or other `--query_options` already in the file are kept, so one file holds a
screen of options (`merge_rows`). Each row also splits the gap by the wrong sound (`wrong_sound_split`).
"""
import argparse
import json
import re
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from local.benchmarks import publish
from local.benchmarks.budget import _run
from local.training.provenance import device_name

ROOT = Path(__file__).resolve().parents[2]


def train(recipe, tag, minutes, work, extra, exp_name="exp"):
    exp = work / exp_name
    if not (exp / tag / "best_model.pth").is_file():
        _run([str(recipe), "--stage", "0", "--stop_stage", "2", "--tag", tag, "--exp_dir", str(exp),
              "--training.epochs", "1000", "--training.early_stop_patience", "null",
              "--training.max_minutes", f"{minutes:g}", *extra], work, work / f"{tag}.log")
    return exp / tag


def wrong_sound_split(metrics):
    """The query - pick gap of one query cell (stage 3's metrics.csv rows) split by `wrong_source`: the share of
    positive queries that took another source, the paired difference on the right-sound queries, and the part of
    the mean gap (dB) that the wrong-sound queries contribute (their summed differences over all positives)."""
    positive = metrics[metrics["target"] >= 0]
    if "wrong_source" not in positive or "pick_si_sdri" not in positive or positive.empty:
        return {}
    wrong = positive["wrong_source"].astype(bool)
    diff = positive["si_sdri"] - positive["pick_si_sdri"]
    return {"wrong_source_share": float(wrong.mean()),
            "query_minus_pick_right_sound": float(diff[~wrong].mean()) if (~wrong).any() else None,
            "gap_from_wrong_sound_db": float(diff[wrong].sum() / len(positive))}


def merge_rows(earlier, rows, earlier_machine=None):
    """The rows of an earlier --out that this run does not replace (another source count or other query options)
    followed by this run's, sorted by source count: one row per (n_src, query_options). Every row names the machine
    that trained it (`machine`; an earlier row without one gets `earlier_machine`, the earlier file's), since rows
    of one file may come from sittings on different machines and minutes of training are not comparable across
    them."""
    def key(row):
        return row.get("n_src"), tuple(row.get("query_options") or ())

    new = {key(row) for row in rows}
    kept = [{**row, "machine": row.get("machine") or earlier_machine} for row in earlier if key(row) not in new]
    return sorted(kept + rows, key=lambda row: row["n_src"])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="run.sh")
    parser.add_argument("--n_src", nargs="+", type=int, default=[2, 5], choices=(2, 3, 5))
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--work", default="exp/benchmarks/extraction")
    parser.add_argument("--out", default="egs/synth/extraction_gate.json")
    parser.add_argument("--query_options", type=shlex.split, default=[], metavar="'OPTIONS'",
                        help="recipe options for the query model only, quoted, e.g. '--model.film_layers 1' (its "
                             "runs then go to exp_<options>/ in --work, the separator's stay in exp/)")
    parser.add_argument("extra", nargs="*", help="more recipe options, after --, e.g. -- --data_dir DIR")
    args = parser.parse_args(argv)
    recipe = (ROOT / args.recipe).resolve()
    if not recipe.is_file():
        sys.exit(f"extraction: recipe {recipe} not found")
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    command = shlex.join(["python", "-m", "local.benchmarks.extraction", *(argv or sys.argv[1:])])
    rows = []
    for n in args.n_src:
        query, separator = f"query_lstm_{n}src", f"lstm_{n}src_sisdr"
        query_exp_dir = "exp_" + re.sub(r"[^A-Za-z0-9.]+", "_", " ".join(args.query_options)).strip("_") \
            if args.query_options else "exp"
        query_exp = train(recipe, query, args.minutes, work, [*args.extra, *args.query_options], query_exp_dir)
        separator_exp = train(recipe, separator, args.minutes, work, args.extra)
        _run([str(recipe), "--stage", "3", "--stop_stage", "3", "--tag", query, "--exp_dir", str(work / query_exp_dir),
              "--eval.pick_baseline", str(separator_exp), *args.extra], work, work / f"{query}.log")
        summary = json.loads((query_exp / "eval" / "summary.json").read_text())
        rows.append({"n_src": n, "minutes": args.minutes, "query_tag": query, "separator_tag": separator,
                     **{key: summary.get(key) for key in ("si_sdri", "si_sdri_ci95", "pick_si_sdri",
                                                          "pick_si_sdri_ci95", "query_minus_pick", "n_positive",
                                                          "n_negative", "negative_level_db",
                                                          "negative_share_above_-20db", "missed_share",
                                                          "presence_auc")},
                     **wrong_sound_split(pd.read_csv(query_exp / "eval" / "metrics.csv")),
                     "command": command, "query_options": args.query_options, "machine": device_name(),
                     "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")})
        print(f"extraction: {n} sources: query {rows[-1]['si_sdri']:.2f}, separate-then-pick "
              f"{rows[-1]['pick_si_sdri']:.2f}, query - pick {rows[-1]['query_minus_pick']['mean']:+.2f} "
              f"{rows[-1]['query_minus_pick']['ci95']}", flush=True)
    out, earlier, earlier_machine = Path(args.out), [], None
    if out.is_file():
        previous = json.loads(out.read_text())
        if previous.get("recipe") == args.recipe:
            earlier, earlier_machine = previous.get("rows", []), previous.get("machine")
    publish({"recipe": args.recipe, "extra": args.extra, "rows": merge_rows(earlier, rows, earlier_machine)}, args.out)


if __name__ == "__main__":
    main()

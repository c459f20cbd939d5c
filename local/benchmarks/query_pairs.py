"""Two query models on the same test queries, paired: what B changes against A (issue 23).

    python -m local.benchmarks.query_pairs exp/A/query_lstm_5src exp/B/query_lstm_5src [--out pairs.json]

Stage 3 of a query model (local/evaluation/query_eval.py) writes one row per test query to eval/metrics.csv. Two
models evaluated on the same views have the same queries, so their difference is measured per query, which is far
tighter than comparing two summaries: the mean of B - A with its bootstrap interval (local/evaluation/uncertainty.py
`paired_difference`) for the SI-SDRi and the share of missed positives (outputs more than 20 dB below their source)
and of wrong sounds, and for the share of negative queries above -20 dB relative to the mixture (each query a 0 or
1, so the interval is that of a paired difference of proportions).
"""
import argparse
import sys
from pathlib import Path

import pandas as pd

from local.benchmarks import publish
from local.common.errors import RecipeError
from local.evaluation.uncertainty import paired_difference

KEY = ["mixture_id", "query", "target"]
LEAK_DB = -20.0  # a negative query's output above this level relative to the mixture leaks (stage 3's threshold)


def load_metrics(exp):
    path = Path(exp) / "eval" / "metrics.csv"
    if not path.is_file():
        raise RecipeError(f"{path} not found: evaluate the query model first (./run.sh --stage 3 --tag ...)")
    df = pd.read_csv(path)
    missing = [column for column in KEY + ["si_sdri", "level_db"] if column not in df]
    if missing:
        raise RecipeError(f"{path} has no column {', '.join(missing)}: not a query model's metrics.csv")
    return df


def paired_queries(a, b):
    """{measure: {mean, ci95, n, a, b}} of B - A over the queries both hold; refuses two sets of queries that differ
    (other views, seed or negatives: the models were not evaluated on the same items)."""
    merged = a.merge(b, on=KEY, suffixes=("_a", "_b"), how="outer", indicator=True)
    unmatched = merged[merged["_merge"] != "both"]
    if len(unmatched):
        first = unmatched.iloc[0]
        raise RecipeError(f"the two evaluations hold different queries ({len(unmatched)} unmatched, e.g. "
                          f"{first['mixture_id']} / {first['query']}): evaluate both on the same views")
    positive, negative = merged[merged["target"] >= 0], merged[merged["target"] < 0]
    measures = {"si_sdri": (positive, lambda df, s: df[f"si_sdri_{s}"])}
    for column in ("missed", "wrong_source"):
        if f"{column}_a" in merged and f"{column}_b" in merged:
            measures[f"{column}_share"] = (positive, lambda df, s, c=column: df[f"{c}_{s}"].astype(float))
    measures["negative_share_above_-20db"] = (negative, lambda df, s: (df[f"level_db_{s}"] > LEAK_DB).astype(float))
    out = {}
    for name, (rows, value) in measures.items():
        if rows.empty:
            continue
        a_values, b_values = value(rows, "a").to_numpy(), value(rows, "b").to_numpy()
        out[name] = {**paired_difference(a_values, b_values), "a": float(a_values.mean()), "b": float(b_values.mean())}
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", help="the reference query experiment (exp/<tag>)")
    parser.add_argument("b", help="the query experiment compared with it")
    parser.add_argument("--out", help="write the differences as JSON here")
    args = parser.parse_args(argv)
    try:
        pairs = paired_queries(load_metrics(args.a), load_metrics(args.b))
    except RecipeError as error:
        sys.exit(f"ERROR: {error}")
    print(f"B - A, paired per query (A {args.a}, B {args.b}):")
    for name, row in pairs.items():
        low, high = row["ci95"]
        print(f"  {name:28s} A {row['a']:8.3f}  B {row['b']:8.3f}  B - A {row['mean']:+.3f} [{low:+.3f}, {high:+.3f}]"
              f"  ({row['n']} queries)")
    if args.out:
        publish({"a": args.a, "b": args.b, "pairs": pairs}, args.out)


if __name__ == "__main__":
    main()

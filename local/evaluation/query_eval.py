"""Stage 3 for the query models (issue 23): label-queried extraction, scored per query.

On every test mixture each source is queried once by its label, plus `data.query_negatives` queries for
categories the mixture does not hold (local/data/queries.py, seeded by the views' seed), the items the model
trained on. Positive queries: SI-SDR of the output against the queried source and its improvement over the
mixture (SI-SDRi), overall and per category. Negative queries: the output's level relative to the mixture,
10 log10(|y|^2 / |x|^2) dB (lower is better: silence is the right answer), and the share of negatives above
-20 dB. Means with 95 % bootstrap intervals over queries.

Which failure is it, the wrong sound or a poor one? Each positive query's output is also scored against the
mixture's other sources (`other_si_sdr`, the best of them); `wrong_source` marks outputs closer to another source
than to the queried one, and `wrong_source_share` in the summary counts them: a query model that extracts the
wrong category fails at identification, which the oracle pick of separate-then-pick never has to do.

A positive query can also fail by silence, which SI-SDR, blind to scale, does not see: `target_level_db`,
10 log10(|y|^2 / |s|^2), the output's level relative to the queried source, and `missed` when it is below -20 dB
(the negatives' threshold): the sound was there and the model answered "absent" (a presence gate shut,
local/models/query_lstm.py). `missed_share` in the summary counts them. For a model with a presence gate, each
query's `presence` (the gate's probability that the queried sound is there) and `presence_auc` in the summary: the
probability that a positive query's gate exceeds a negative one's (Mann-Whitney), which tells a gate that cannot
tell present from absent from one whose threshold sits wrong (missed and leaking negatives trade along it).

The reference every user asks about, with `eval.pick_baseline: exp/<separator>`: separate-then-pick, the n-source
separator of another experiment (same test views) with the oracle choice, per positive query, of its output
closest to the target (the best SI-SDR: an upper bound for any way of picking), and the paired difference
query - pick over the same queries. Not yet here: audio examples on the page.
"""
import html
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from local.common import io_utils
from local.common.errors import RecipeError
from local.data.dataset import ViewDataset
from local.data.queries import ExamplePool, QueryDataset
from local.data.sources import load_sources
from local.data.views import split_candidates
from local.evaluation.curves import curves_figure
from local.evaluation.metrics import si_sdr
from local.evaluation.uncertainty import bootstrap_ci

NEGATIVE_THRESHOLD_DB = -20.0
# per query; in stage 3's fingerprint, so that adding a score re-scores the summaries written before it
QUERY_SCORES = ("si_sdri", "level_db", "wrong_source", "missed", "presence")


def level_db(estimate, mixture, eps=1e-12):
    """10 log10(sum y^2 / sum x^2): the output's level relative to the mixture, in dB."""
    return float(10 * np.log10((np.sum(np.square(estimate)) + eps) / (np.sum(np.square(mixture)) + eps)))


def best_other_si_sdr(estimate, sources, target):
    """The best SI-SDR of `estimate` [T] against the sources [n, T] other than `target` (-inf with none)."""
    others = [i for i in range(len(sources)) if i != target]
    if not others:
        return float("-inf")
    return float(max(si_sdr(sources[i][None], estimate[None])[0] for i in others))


def score_queries(model, dataset, n_mixtures, announce=print):
    """One row per query item of the first `n_mixtures` mixtures."""
    rows = []
    for m in range(n_mixtures):
        items = [dataset[m * dataset.slots + slot] for slot in range(dataset.slots)]
        _, sources = dataset.base.mix(dataset.base.df.iloc[m].to_dict(), m)
        sources = sources.numpy()
        mixture = items[0][0][0]
        conditions = [condition for (_, condition), _, _ in items]  # label indices, or example clips
        queries = torch.stack(conditions) if torch.is_tensor(conditions[0]) else torch.tensor(conditions)
        with torch.no_grad():
            masked, logit = model.masked_and_presence(mixture.expand(len(items), -1), queries)
            presence = [None] * len(items) if logit is None else torch.sigmoid(logit).tolist()
            estimates = model.gated(masked, logit)[:, 0].numpy()
        x = mixture.numpy()
        for ((_, _), target, meta), y, p in zip(items, estimates, presence):
            row = {"mixture_id": meta["mixture_id"], "query": meta["query"], "target": meta["target"]}
            if p is not None:
                row["presence"] = p
            if meta["target"] >= 0:
                reference = target.numpy()[None]
                row["si_sdr"] = float(si_sdr(reference, y[None])[0])
                row["si_sdri"] = row["si_sdr"] - float(si_sdr(reference, x[None])[0])
                row["other_si_sdr"] = best_other_si_sdr(y, sources, meta["target"])
                row["wrong_source"] = bool(row["other_si_sdr"] > row["si_sdr"])
                row["target_level_db"] = level_db(y, reference[0])
                row["missed"] = bool(row["target_level_db"] < NEGATIVE_THRESHOLD_DB)
            else:
                row["level_db"] = level_db(y, x)
            rows.append(row)
        if (m + 1) % 50 == 0 or m + 1 == n_mixtures:
            announce(f"stage 3: {m + 1}/{n_mixtures} mixtures ({len(rows)} queries)")
    return pd.DataFrame(rows)


def pick_baseline_scores(baseline, dataset, df, n_mixtures):
    """SI-SDR and SI-SDRi of separate-then-pick on every positive query of `df`: the separator `baseline` run once
    per mixture, its output with the best SI-SDR against the queried source taken."""
    picked = []
    for m in range(n_mixtures):
        row = dataset.base.df.iloc[m]
        mixture, sources = dataset.base.mix(row.to_dict(), m)
        with torch.no_grad():
            outputs = baseline(mixture[None])[0].numpy()
        x = mixture.numpy()
        for query in df[(df["mixture_id"] == row["mixture_id"]) & (df["target"] >= 0)].itertuples():
            reference = sources[query.target].numpy()[None]
            best = max(float(si_sdr(reference, output[None])[0]) for output in outputs)
            picked.append({"mixture_id": query.mixture_id, "query": query.query, "pick_si_sdr": best,
                           "pick_si_sdri": best - float(si_sdr(reference, x[None])[0])})
    return pd.DataFrame(picked)


def presence_auc(present, absent):
    """P(a present query's gate > an absent one's), ties counted half: the Mann-Whitney U over n1 n0."""
    from scipy.stats import mannwhitneyu

    return float(mannwhitneyu(present, absent).statistic / (len(present) * len(absent)))


def summarise_queries(df, ecfg):
    positive, negative = df[df["target"] >= 0], df[df["target"] < 0]
    seed, resamples = int(ecfg["bootstrap_seed"]), int(ecfg["bootstrap"])
    summary = {"n_positive": int(len(positive)), "n_negative": int(len(negative))}
    if len(positive):
        summary.update({"si_sdr": float(positive["si_sdr"].mean()), "si_sdri": float(positive["si_sdri"].mean()),
                        "si_sdri_ci95": list(bootstrap_ci(positive["si_sdri"], resamples, seed)),
                        "si_sdri_median": float(positive["si_sdri"].median())})
        if "wrong_source" in positive:
            summary["wrong_source_share"] = float(positive["wrong_source"].astype(bool).mean())
        if "missed" in positive:
            summary["missed_share"] = float(positive["missed"].astype(bool).mean())
    if len(negative):
        summary.update({"negative_level_db": float(negative["level_db"].mean()),
                        "negative_level_db_ci95": list(bootstrap_ci(negative["level_db"], resamples, seed)),
                        "negative_share_above_-20db": float((negative["level_db"] > NEGATIVE_THRESHOLD_DB).mean())})
    if "presence" in df and len(positive) and len(negative):
        summary["presence_auc"] = presence_auc(positive["presence"], negative["presence"])
    return summary


def evaluate_queries(cfg, exp_dir, model, test_csv, root, out_dir, fingerprint):
    """Score a query model on the test views' query items; writes metrics.csv, per_category.csv, summary.json
    (last) and index.html in `out_dir`. Returns the summary."""
    start = time.time()
    base, pool, labels = ViewDataset(test_csv, root), None, model.labels
    if getattr(model, "query_type", "label") == "example":  # every test category, held-out ones included
        sources, _ = load_sources(Path(test_csv).parent.parent)
        candidates = split_candidates(sources, cfg["data"])["test"]
        labels = sorted(candidates)
        pool = ExamplePool(candidates, root, base.sample_rate, cfg["data"]["query_example_seconds"], base.cache)
    # a label model cannot name a category it never learnt: held-out categories are queried by example only
    held_out = () if pool is not None else cfg["data"]["query_held_out"]
    dataset = QueryDataset(base, labels, cfg["data"]["query_negatives"], cfg["data"]["view_seed"], return_meta=True,
                           examples=pool, held_out=held_out)
    n_mixtures = len(dataset.base)
    if cfg["eval"]["max_mixtures"] is not None:
        n_mixtures = min(n_mixtures, int(cfg["eval"]["max_mixtures"]))
    print(f"stage 3: evaluating {Path(exp_dir).name} on {n_mixtures} test mixtures, {dataset.slots} queries each "
          f"({dataset.base.n_src} positive, {dataset.negatives} negative)", flush=True)
    model.eval()
    df = score_queries(model, dataset, n_mixtures, announce=lambda line: print(line, flush=True))
    extra = {}
    if cfg["eval"].get("pick_baseline"):
        from local.evaluation.uncertainty import paired_difference
        from local.models import load_model, n_sources

        folder = Path(cfg["eval"]["pick_baseline"])
        path = folder / "best_model.pth" if folder.is_dir() else folder
        if not path.is_file():
            raise RecipeError(f"eval.pick_baseline: {path} not found; give the folder of a trained n-source "
                              f"experiment (exp/<tag>)")
        baseline = load_model(path).eval()
        if getattr(baseline, "queried", False) or n_sources(baseline) != dataset.base.n_src:
            raise RecipeError(f"eval.pick_baseline: {path} is not a {dataset.base.n_src}-source separator")
        print(f"stage 3: separate-then-pick with {path}", flush=True)
        df = df.merge(pick_baseline_scores(baseline, dataset, df, n_mixtures), on=["mixture_id", "query"], how="left")
        positive = df[df["target"] >= 0]
        diff = paired_difference(positive["pick_si_sdri"], positive["si_sdri"], int(cfg["eval"]["bootstrap"]),
                                 int(cfg["eval"]["bootstrap_seed"]))
        extra = {"pick_baseline": str(path), "pick_si_sdri": float(positive["pick_si_sdri"].mean()),
                "pick_si_sdri_ci95": list(bootstrap_ci(positive["pick_si_sdri"], int(cfg["eval"]["bootstrap"]),
                                                       int(cfg["eval"]["bootstrap_seed"]))),
                "query_minus_pick": diff}
    out_dir = Path(out_dir)
    io_utils.write_csv(df, out_dir / "metrics.csv")
    positive = df[df["target"] >= 0].astype({c: float for c in ("wrong_source", "missed") if c in df})
    per_category = (positive.groupby("query")[[c for c in ("si_sdr", "si_sdri", "wrong_source", "missed") if c in df]]
                    .mean().rename(columns={"wrong_source": "wrong_source_share", "missed": "missed_share"}))
    if "level_db" in df:  # absent with data.query_negatives 0
        per_category = per_category.join(df[df["target"] < 0].groupby("query")["level_db"].mean()
                                         .rename("negative_level_db"), how="outer")
    per_category = per_category.reset_index().rename(columns={"query": "label"})
    held_out = set(cfg["data"]["query_held_out"])
    per_category["held_out"] = per_category["label"].isin(held_out)
    io_utils.write_csv(per_category, out_dir / "per_category.csv")
    if held_out:  # the few-shot case: categories queried by example that training never queried
        for name, rows in (("seen", df[~df["query"].isin(held_out)]), ("held_out", df[df["query"].isin(held_out)])):
            for key, value in summarise_queries(rows, cfg["eval"]).items():
                if key.startswith(("si_sdri", "n_positive", "negative")):
                    extra[f"{name}_{key}"] = value
    summary = {"tag": cfg["tag"], "model": cfg["model"]["name"], "task": "label-queried extraction",
               "n_mixtures": n_mixtures, "n_src": dataset.base.n_src, "loss": cfg["loss"]["name"],
               **summarise_queries(df, cfg["eval"]), **extra, "evaluated_at": time.strftime("%Y-%m-%d %H:%M:%S"),
               "eval_seconds": round(time.time() - start, 1), **fingerprint}
    curves = curves_figure(Path(exp_dir), out_dir / "curves.png", f"{cfg['tag']}: training")
    write_page(out_dir, summary, per_category, curves)
    io_utils.write_json(summary, out_dir / "summary.json")
    print(f"stage 3: si_sdri {summary.get('si_sdri', float('nan')):.2f} over {summary['n_positive']} positive queries "
          f"(95 % CI {summary.get('si_sdri_ci95', [float('nan')] * 2)[0]:.2f} to "
          f"{summary.get('si_sdri_ci95', [float('nan')] * 2)[1]:.2f}); "
          + (f"negative queries at {summary['negative_level_db']:.1f} dB re the mixture, "
             f"{summary['negative_share_above_-20db']:.0%} above -20 dB" if "negative_level_db" in summary
             else "no negative queries (data.query_negatives 0)")
          + (_pick_text(summary) if "query_minus_pick" in summary else "") + f"; wrote {out_dir}/summary.json",
          flush=True)


def _pick_text(summary):
    d = summary["query_minus_pick"]
    return (f"; separate-then-pick {summary['pick_si_sdri']:.2f}, query - pick {d['mean']:+.2f} "
            f"[{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}]")


def write_page(out_dir, summary, per_category, curves):
    """index.html: the summary, the training curves and the per-category table (opens from disk)."""
    figures = [("SI-SDRi, positive queries", "si_sdri", "si_sdri_ci95"), ("SI-SDR, positive queries", "si_sdr", None),
               ("level of negative queries, dB re mixture", "negative_level_db", "negative_level_db_ci95"),
               ("share of negatives above -20 dB", "negative_share_above_-20db", None),
               ("share of positive queries closer to another source (the wrong sound)", "wrong_source_share", None),
               ("share of positive queries answered by silence (over 20 dB below the source)", "missed_share", None),
               ("presence gate: P(a present query's gate > an absent one's)", "presence_auc", None),
               ("separate-then-pick (oracle pick): SI-SDRi", "pick_si_sdri", "pick_si_sdri_ci95")]
    rows = "".join(f"<tr><th>{name}</th><td>{summary[key]:.2f}"
                   + (f" [{summary[ci][0]:.2f}, {summary[ci][1]:.2f}]" if ci and ci in summary else "") + "</td></tr>"
                   for name, key, ci in figures if key in summary)
    if "query_minus_pick" in summary:
        d = summary["query_minus_pick"]
        rows += (f"<tr><th>query - pick, paired over {d['n']} positive queries</th><td>{d['mean']:+.2f} "
                 f"[{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}]</td></tr>")
    parts = [f"<h1>{html.escape(summary['tag'])}</h1>",
             f"<p>{html.escape(summary['task'])} with <b>{html.escape(summary['model'])}</b>: {summary['n_mixtures']} "
             f"test mixtures of {summary['n_src']} sources, {summary['n_positive']} positive and "
             f"{summary['n_negative']} negative queries; [95 % bootstrap interval over queries].</p>",
             f"<table>{rows}</table>"]
    if curves:
        parts += ["<h2>Training</h2>", f'<img src="{Path(curves).name}" alt="training curves" width="640">']
    parts += ["<h2>Per category</h2>", per_category.to_html(index=False, float_format=lambda v: f"{v:.2f}")]
    io_utils.write_text(Path(out_dir) / "index.html", "<!doctype html><meta charset='utf-8'><title>"
                        + html.escape(summary["tag"]) + "</title>" + "\n".join(parts))

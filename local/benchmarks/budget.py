"""Benchmark: separation quality per CPU-minute of training (issue 12).

    python -m local.benchmarks.budget --recipe egs/debian_sounds/run.sh --tags lstm_2src_sisdr sudormrf_2src \
        --minutes 2 5 10 --dynamic_mixing false true --work exp/benchmarks/budget_debian_sounds

For every tag and dynamic-mixing setting, one training run (stages 0-2 of the recipe, in `--work`, same seed)
saves the model after each budget of training minutes (`training.snapshot_minutes`); each snapshot is then
evaluated by stage 3 on the same test views. One run per cell, not one per budget: a 2-minute budget gets the
weights the 10-minute run had after 2 minutes (the learning-rate schedule is the same up to then, since the
plateau scheduler acts on validations only). Budgets are wall-clock minutes of this machine's CPU, with
whatever threads torch uses; run it alone. Prints a table and writes JSON and a figure next to it. Besides the mean
SI-SDRi over all test mixtures it gives the median and the mean over mixtures whose sources overlap (short hits
that never sound together are separated by gating alone, at 80 dB and more, and dominate a mean). With both
dynamic-mixing settings it gives the gain of dynamic mixing per budget, paired on the same test mixtures. Run again
in the same `--work` with the same options, it reuses finished runs and evaluations (delete the folder to measure
afresh; other options are refused there). Merge several runs into one table with local/benchmarks/budget_matrix.py.
"""
import argparse
import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import torch
import yaml

from local.benchmarks import publish
from local.evaluation.uncertainty import paired_difference
from local.training.provenance import device_name
from local.training.train import SaveSnapshots

ROOT = Path(__file__).resolve().parents[2]


def _run(command, cwd, log):
    print("$ " + " ".join(command), flush=True)
    with open(log, "a") as out:
        done = subprocess.run(command, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        sys.exit(f"budget: the command failed (exit {done.returncode}); see {log}")


def training_progress(snapshot, conf):
    """Epoch, optimizer steps and training mixtures seen (steps x batch size: budget runs train in one process)
    when the snapshot was taken; None each for snapshots written before stage 2 recorded it."""
    infos = torch.load(snapshot, map_location="cpu", weights_only=True).get("infos", {})
    progress = infos.get("training_progress") or {}
    steps = progress.get("optimizer_steps")
    batch = yaml.safe_load(Path(conf).read_text())["training"]["batch_size"]
    return {"epoch": progress.get("epoch"), "optimizer_steps": steps,
            "mixtures_seen": None if steps is None else int(steps) * int(batch)}


def cell(recipe, tag, dynamic, minutes, work, extra):
    """Train one cell with snapshots, evaluate each snapshot; returns one row per budget."""
    exp = work / f"exp_dm{int(dynamic)}"
    log = work / f"{tag}_dm{int(dynamic)}.log"
    budget = max(minutes)
    start = time.time()
    snapshots = [exp / tag / "snapshots" / SaveSnapshots.name(float(m)) for m in minutes]
    reused = all(p.is_file() for p in snapshots)
    if reused:  # a finished run of this cell: evaluate (or read) its snapshots again
        print(f"budget: {tag} dm={dynamic}: reusing the snapshots in {snapshots[0].parent}", flush=True)
    else:
        _run([str(recipe), "--stage", "0", "--stop_stage", "2", "--tag", tag, "--exp_dir", str(exp),
              "--training.epochs", "1000", "--training.early_stop_patience", "null",
              "--training.max_minutes", f"{budget + 0.25:g}", "--training.snapshot_minutes", json.dumps(list(minutes)),
              "--data.dynamic_mixing", "true" if dynamic else "false", *extra], work, log)
    train_wall = None if reused else round(time.time() - start, 1)
    rows = []
    for m in minutes:
        snapshot = exp / tag / "snapshots" / SaveSnapshots.name(float(m))
        if not snapshot.is_file():
            sys.exit(f"budget: no snapshot after {m} minutes in {snapshot.parent}; see {log}")
        at = work / f"at_{m:g}min_dm{int(dynamic)}"
        (at / tag).mkdir(parents=True, exist_ok=True)
        shutil.copy(exp / tag / "conf.yml", at / tag / "conf.yml")
        shutil.copy(snapshot, at / tag / "best_model.pth")
        if not (at / tag / "eval" / "summary.json").is_file():
            _run([str(recipe), "--stage", "3", "--stop_stage", "3", "--tag", tag, "--exp_dir", str(at), *extra], work,
                 log)
        summary = json.loads((at / tag / "eval" / "summary.json").read_text())
        progress = training_progress(snapshot, exp / tag / "conf.yml")
        per_mixture = pd.read_csv(at / tag / "eval" / "metrics.csv")
        # mixtures where the sources never sound together (short hits at random onsets) are separated by gating
        # alone and can score 80 dB or more: they dominate a mean; the mean over overlapping mixtures does not
        overlapping = overlapping_rows(per_mixture)["si_sdri"]
        rows.append({"tag": tag, "dynamic_mixing": dynamic, "minutes": m, "si_sdri": summary.get("si_sdri"),
                     "si_sdri_ci95": summary.get("si_sdri_ci95"), "sdri": summary.get("sdri"),
                     "bound": summary.get("bound"), "bound_si_sdri": summary.get("bound_si_sdri"),
                     "n_mixtures": summary.get("n_mixtures"), "si_sdri_median": float(per_mixture["si_sdri"].median()),
                     "si_sdri_overlapping": float(overlapping.mean()), "n_overlapping": int(len(overlapping)),
                     "train_wall_seconds": train_wall, **progress})
        seen = f", {progress['mixtures_seen']} training mixtures seen" if progress["mixtures_seen"] else ""
        print(f"  {tag} dm={dynamic} {m:g} min: SI-SDRi {rows[-1]['si_sdri']:.2f} {rows[-1]['si_sdri_ci95']}{seen}",
              flush=True)
    return rows


def overlapping_rows(per_mixture, suffix=""):
    """The rows of a metrics.csv whose sources sound together: overlap_seconds > 0 (stage 3 since the overlap
    measure), or max_overlap >= 2 in evaluations made before it; every row where neither column exists."""
    if f"overlap_seconds{suffix}" in per_mixture:
        return per_mixture[per_mixture[f"overlap_seconds{suffix}"] > 0]
    if f"max_overlap{suffix}" in per_mixture:
        return per_mixture[per_mixture[f"max_overlap{suffix}"] >= 2]
    return per_mixture


def _test_metrics(work, tag, minutes, dynamic):
    """The per-mixture (per-query) metrics of one evaluated snapshot, and the keys that pair its rows."""
    metrics = pd.read_csv(Path(work) / f"at_{minutes:g}min_dm{int(dynamic)}" / tag / "eval" / "metrics.csv")
    return metrics, ["mixture_id", "query"] if "query" in metrics else ["mixture_id"]  # query models: a row per query


def dynamic_mixing_gain(work, tag, minutes):
    """Dynamic minus fixed views after the same training minutes, paired on the same test mixtures (the views
    of val and test stay fixed under dynamic mixing): {all, overlapping}, each {mean, ci95, n} in dB SI-SDRi."""
    (fixed, keys), (dynamic, _) = (_test_metrics(work, tag, minutes, d) for d in (False, True))
    both = fixed.merge(dynamic, on=keys, suffixes=("_fixed", "_dynamic"))
    overlapping = overlapping_rows(both, "_fixed")
    return {"tag": tag, "minutes": minutes,
            **{name: paired_difference(part["si_sdri_fixed"], part["si_sdri_dynamic"])
               for name, part in (("all", both), ("overlapping", overlapping))}}


def paired_between_tags(work, tags, minutes, dynamic_settings):
    """Each tag minus every tag before it in `tags`, after the same minutes and with the same dynamic-mixing
    setting, paired on the same test mixtures: [{minutes, dynamic_mixing, tag, minus, mean, ci95, n}] in dB
    SI-SDRi, so that a claimed difference between families comes with its interval from the run itself."""
    out = []
    for dynamic in dynamic_settings:
        for m in minutes:
            for i, reference in enumerate(tags):
                for tag in tags[i + 1 :]:
                    (ref, keys), (cur, _) = (_test_metrics(work, t, m, dynamic) for t in (reference, tag))
                    both = ref.merge(cur, on=keys, suffixes=("_ref", "_cur"))
                    out.append({"minutes": m, "dynamic_mixing": dynamic, "tag": tag, "minus": reference,
                                **paired_difference(both["si_sdri_ref"], both["si_sdri_cur"])})
    return out


def figure(rows, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for key in sorted({(r["tag"], r["dynamic_mixing"]) for r in rows}):
        line = sorted((r for r in rows if (r["tag"], r["dynamic_mixing"]) == key), key=lambda r: r["minutes"])
        name = f"{key[0]}{' + dynamic mixing' if key[1] else ''}"
        bar = ax.errorbar([r["minutes"] for r in line], [r["si_sdri"] for r in line], capsize=3, marker="o",
                          yerr=[[max(0, r["si_sdri"] - r["si_sdri_ci95"][0]) for r in line],
                                [max(0, r["si_sdri_ci95"][1] - r["si_sdri"]) for r in line]], label=f"{name}: all")
        ax.plot([r["minutes"] for r in line], [r["si_sdri_overlapping"] for r in line], "--", marker="s",
                color=bar[0].get_color(), label=f"{name}: overlapping mixtures")
    budget_axes(ax, title)
    save_figure(fig, path)


def budget_axes(ax, title):
    """Labels of an SI-SDRi-per-training-minutes plot (here and in local/benchmarks/budget_matrix.py)."""
    ax.set_xlabel("training minutes (2-core CPU)")
    ax.set_ylabel("test SI-SDRi (dB)")
    ax.set_title(title, fontsize="medium")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")


def save_figure(fig, path):
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="run.sh", help="the recipe script (run.sh, egs/<name>/run.sh)")
    parser.add_argument("--tags", nargs="+", default=["lstm_2src_sisdr"])
    parser.add_argument("--minutes", nargs="+", type=float, default=[2, 5, 10])
    parser.add_argument("--dynamic_mixing", nargs="+", choices=("false", "true"), default=["false", "true"])
    parser.add_argument("--work", default="exp/benchmarks/budget", help="where data/, the runs and the results go")
    parser.add_argument("extra", nargs="*", help="more recipe options, after --, e.g. -- --data_dir DIR")
    args = parser.parse_args(argv)
    recipe, work = (ROOT / args.recipe).resolve(), Path(args.work).resolve()
    if not recipe.is_file():
        sys.exit(f"budget: no recipe {recipe}; give --recipe run.sh or egs/<name>/run.sh")
    if min(args.minutes) <= 0:
        sys.exit(f"budget: --minutes must be positive training minutes, got {' '.join(f'{m:g}' for m in args.minutes)}")
    earlier = work / "budget.json"
    if earlier.is_file():  # reusing runs made with other options would mislabel them
        made = json.loads(earlier.read_text())
        if (made.get("recipe"), made.get("extra")) != (args.recipe, args.extra):
            sys.exit(f"budget: {work} holds runs of {made.get('recipe')} {' '.join(made.get('extra') or [])}; "
                     f"use another --work, or delete it to measure these options")
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for tag in args.tags:
        for dynamic in args.dynamic_mixing:
            rows += cell(recipe, tag, dynamic == "true", sorted(args.minutes), work, args.extra)
    print(f"\n{'tag':<22} {'dyn. mixing':>11} {'minutes':>7} {'SI-SDRi':>8} {'95 % interval':>16} {'overlapping':>11} "
          f"{'median':>7} {'bound':>12}")
    for r in rows:
        ci = r["si_sdri_ci95"] or [float("nan")] * 2
        bound = f"{r['bound']} {r['bound_si_sdri']:.2f}" if r["bound"] else "-"
        print(f"{r['tag']:<22} {str(r['dynamic_mixing']):>11} {r['minutes']:>7g} {r['si_sdri']:>8.2f} "
              f"[{ci[0]:>6.2f}, {ci[1]:>6.2f}] {r['si_sdri_overlapping']:>11.2f} {r['si_sdri_median']:>7.2f} "
              f"{bound:>12}")
    gains = [dynamic_mixing_gain(work, tag, m) for tag in args.tags for m in sorted(args.minutes)
             if {"false", "true"} <= set(args.dynamic_mixing)]
    for g in gains:
        print(f"dynamic mixing gain, {g['tag']} after {g['minutes']:g} min (paired, same test views): all "
              f"{g['all']['mean']:+.2f} [{g['all']['ci95'][0]:+.2f}, {g['all']['ci95'][1]:+.2f}], overlapping "
              f"{g['overlapping']['mean']:+.2f} [{g['overlapping']['ci95'][0]:+.2f}, "
              f"{g['overlapping']['ci95'][1]:+.2f}]")
    paired = paired_between_tags(work, args.tags, sorted(args.minutes), [d == "true" for d in args.dynamic_mixing])
    for d in paired:
        views = "dynamic mixing" if d["dynamic_mixing"] else "fixed views"
        print(f"{d['tag']} - {d['minus']} after {d['minutes']:g} min ({views}), paired: {d['mean']:+.2f} "
              f"[{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}]")
    figure(rows, work / "budget.png", f"{args.recipe}: SI-SDRi per training budget")
    print(f"wrote {work / 'budget.png'}")
    command = shlex.join(["python", "-m", "local.benchmarks.budget", *(sys.argv[1:] if argv is None else argv)])
    publish({"recipe": args.recipe, "extra": args.extra, "machine": device_name(), "command": command, "rows": rows,
             "dynamic_mixing_gain": gains, "paired": paired}, work / "budget.json")


if __name__ == "__main__":
    main()

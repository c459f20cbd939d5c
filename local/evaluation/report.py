"""Stage 4: one results table across every experiment in the experiments folder, and grid status.

Reads exp/*/conf.yml, training.json, eval/summary.json, history.txt and provenance.json, and writes
exp/results.csv and exp/RESULTS.md (tag, model, sources, loss, parameters, epochs, best validation
loss and the domain it compared in, SI-SDRi and SDRi with their 95 % bootstrap intervals, SIR, SAR, STOI,
the oracle mask that bounds the model with the model's share of it, training time over every run,
learning-rate and other setting changes, git commit), sorted by tag, and exp/results.png (SI-SDRi per
experiment with its interval, next to its bound). `compare` gives the paired difference of two
experiments on the same test views. With a grid file (conf/grids/*.yml, a list of `cells`), each cell gets a
status like the category study's TO-RUN checklist: done / trained, not evaluated / training at epoch N / not
started. Sweeps (exp/<tag>/sweep/, local/sweep.py) get a table of their trials by state and their best trial,
whose folder is also a row of the results table.
"""
import json
from pathlib import Path

import numpy as np
import pandas as pd

from local.common import io_utils
from local.common.errors import RecipeError
from local.common.frozen import read_frozen

COLUMNS = ["tag", "state", "model", "n_src", "loss", "loss_domain", "pit", "n_parameters", "epochs_trained",
           "best_val_loss", "si_sdri", "si_sdri_ci95", "sdri", "sdri_ci95", "si_sdr", "sdr", "sir", "sar", "stoi",
           "pesq", "input_si_sdr", "fixed_order_si_sdri", "bound", "bound_si_sdri", "share_of_bound",
           "oracle_ratio_si_sdri", "train_seconds", "n_test_mixtures", "changes", "curves", "git_commit"]


def training_epoch(exp):
    """Last epoch logged by the CSV logger in any run (training in progress), or None."""
    epochs = [pd.read_csv(log).get("epoch") for log in (exp / "logs").glob("run*/metrics.csv")]
    epochs = [e.dropna() for e in epochs if e is not None and not e.dropna().empty]
    return max(int(e.max()) for e in epochs) if epochs else None


def experiment_row(exp, exp_root=None):
    exp_root = Path(exp_root) if exp_root is not None else exp.parent
    cfg = read_frozen(exp / "conf.yml")
    row = {"tag": exp.name, "model": cfg["model"]["name"], "n_src": cfg["data"]["n_src"],
           "loss": cfg["loss"]["name"], "pit": cfg["loss"]["pit"]}
    training = exp / "training.json"
    summary = exp / "eval" / "summary.json"
    if summary.is_file():
        row["state"] = "done"
    elif training.is_file():
        row["state"] = "trained, not evaluated"
    else:
        epoch = training_epoch(exp)
        row["state"] = "not started" if epoch is None else f"training at epoch {epoch}"
    if training.is_file():
        t = json.loads(training.read_text())
        row.update(n_parameters=t["n_parameters"], epochs_trained=t["epochs_trained"],
                   best_val_loss=t["best_val_loss"],
                   train_seconds=t.get("train_seconds", t.get("train_seconds_this_run")))
    if summary.is_file():
        s = json.loads(summary.read_text())
        row.update({k: s.get(k) for k in COLUMNS if k in s})
        for key in ("si_sdri_ci95", "sdri_ci95"):
            if isinstance(row.get(key), list):
                row[key] = f"[{row[key][0]:.2f}, {row[key][1]:.2f}]"
        row["n_test_mixtures"] = s["n_mixtures"]
    history = exp / "history.txt"
    if history.is_file():  # "2026-11-21 16:20:00 optim.lr: 0.001 -> 0.0003 at epoch 4" -> the part after the time
        row["changes"] = "; ".join(" ".join(line.split(" ")[2:]) for line in history.read_text().splitlines())
    if (exp / "eval" / "curves.png").is_file():  # training curves, drawn by stage 3 (local/evaluation/curves.py)
        row["curves"] = f"[figure]({exp.relative_to(exp_root).as_posix()}/eval/curves.png)"
    provenance = exp / "provenance.json"
    if provenance.is_file():
        last = json.loads(provenance.read_text())[-1]
        commit = (last.get("git_commit") or "")[:10]
        row["git_commit"] = commit + ("+dirty" if last.get("git_dirty") else "")
    return row


def to_markdown(df):
    def fmt(v):
        if isinstance(v, float):
            if pd.isna(v):
                return ""
            if v.is_integer():
                return str(int(v))
            return f"{v:.3g}" if abs(v) < 0.1 else f"{v:.2f}"
        return "" if v is None else str(v)

    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def format_interval(ci):
    return f"[{ci[0]:.2f}, {ci[1]:.2f}]" if ci else None


def sweep_row(root):
    """One line of a sweep's state (exp/<tag>/sweep/, local/sweep.py): trials by state, the best trial."""
    summary = json.loads((root / "sweep" / "summary.json").read_text())
    table = root / "sweep" / "trials.csv"
    counts = pd.read_csv(table)["state"].value_counts().to_dict() if table.is_file() else summary["counts"]
    finished = counts.get("complete", 0) + counts.get("pruned", 0)
    test = summary.get("best_test") or {}
    ci = test.get("si_sdri_ci95")
    return {"cell": root.name, "finished": f"{finished}/{summary.get('n_trials', '?')}",
            "complete": counts.get("complete", 0), "pruned": counts.get("pruned", 0), "failed": counts.get("fail", 0),
            "running": counts.get("running", 0), "best_trial": summary.get("best_folder"),
            "best_val_si_sdri": summary.get("best_val_si_sdri"), "test_si_sdri": test.get("si_sdri"),
            "test_si_sdri_ci95": format_interval(ci),
            # trial 0, the cell's own config: what the search gained over it
            "default_val_si_sdri": summary.get("default_val_si_sdri"),
            "default_test_si_sdri": (summary.get("default_test") or {}).get("si_sdri"),
            "default_test_si_sdri_ci95": format_interval((summary.get("default_test") or {}).get("si_sdri_ci95")),
            "best_settings": ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                                       for k, v in (summary.get("best_params") or {}).items()),
            "history": f"[figure]({root.name}/sweep/history.png)"}


def sweep_state(row):
    if row["test_si_sdri"] is not None:
        return f"done (sweep, {row['finished']} finished, {row['pruned']} pruned; best trial {row['best_trial']})"
    return (f"sweep: {row['finished']} finished ({row['pruned']} pruned, {row['failed']} failed, "
            f"{row['running']} running)")


def grid_status(grid_path, rows, sweeps=()):
    """[(cell, status)] for every cell of a grid file, from the experiments' and sweeps' rows."""
    from local.common.grid import load_grid

    states = {r["tag"]: r["state"] for r in rows}
    states.update({r["cell"]: sweep_state(r) for r in sweeps})
    return [(cell, states.get(cell, "not started")) for cell in load_grid(grid_path)["cells"]]


def plot(df, path):
    """Bar chart of SI-SDRi per evaluated experiment, with the oracle masks marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = df.dropna(subset=["si_sdri"]) if "si_sdri" in df else df.iloc[:0]
    fig, ax = plt.subplots(figsize=(max(4, 0.6 * len(done) + 2), 3.5))
    errors = None
    if "si_sdri_ci95" in done:  # "[low, high]" strings -> error bar lengths
        bounds = [[float(v) for v in str(c).strip("[]").split(",")] if isinstance(c, str) else [m, m]
                  for c, m in zip(done["si_sdri_ci95"], done["si_sdri"])]
        # the interval is printed to the hundredth and may then miss the mean by a rounding: clip at 0
        errors = np.clip(np.array([[m - lo for (lo, _), m in zip(bounds, done["si_sdri"])],
                                   [hi - m for (_, hi), m in zip(bounds, done["si_sdri"])]], dtype=float), 0, None)
    ax.bar(done["tag"], done["si_sdri"], color="tab:blue", label="model (95 % interval)", yerr=errors, capsize=3)
    if "bound_si_sdri" in done:
        ax.scatter(done["tag"], done["bound_si_sdri"], color="tab:red", marker="_", s=400, label="its oracle bound")
    ax.set_ylabel("SI-SDRi (dB)")
    ax.tick_params(axis="x", rotation=60)
    ax.legend(loc="best", fontsize="small")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    with io_utils.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def report(exp_root, grid=None):
    exp_root = Path(exp_root)
    experiments = sorted(p for p in exp_root.glob("*") if (p / "conf.yml").is_file())
    sweeps = [sweep_row(p.parents[1]) for p in sorted(exp_root.glob("*/sweep/summary.json"))]
    if not experiments and not sweeps and not grid:
        raise RecipeError(f"no experiments in {exp_root}/ (nothing with a conf.yml): train one first (stage 2)")
    rows = [experiment_row(e, exp_root) for e in experiments]
    for sweep in sweeps:  # a sweep's best trial is a row like any experiment, named by its folder
        best = exp_root / sweep["cell"] / "trials" / str(sweep["best_trial"])
        if sweep["best_trial"] is not None and (best / "conf.yml").is_file():
            rows.append({**experiment_row(best, exp_root), "tag": f"{sweep['cell']}/trials/{sweep['best_trial']}"})
    rows.sort(key=lambda r: r["tag"])
    df = pd.DataFrame(rows).reindex(columns=COLUMNS).dropna(axis=1, how="all")
    text = (f"# Results\n\nOne row per experiment in `{exp_root}/`; figures on the test views, in dB except STOI. "
            f"`*_ci95`: 95 % bootstrap interval of the mean over test mixtures. `bound` is the oracle mask that bounds "
            f"the model's masks on the same mixtures (psm: truncated phase-sensitive mask, for real masks in [0, 1]; "
            f"ibm: ideal binary mask, for k-means; none for complex masks and learned bases), `share_of_bound` the "
            f"model's SI-SDRi over it; `oracle_ratio_si_sdri` is the magnitude ratio mask, a reference point, not a "
            f"bound. `loss_domain` is what the loss compared: cells with different objectives are not comparable "
            f"as equals. exp/<tag>/eval/index.html has the details per experiment; `changes` lists settings changed "
            f"during training (exp/<tag>/history.txt).\n\n{to_markdown(df) if rows else '(none yet)'}\n")
    if rows:
        io_utils.write_csv(df, exp_root / "results.csv")
        plot(df, exp_root / "results.png")
        text += "\n![SI-SDRi per experiment](results.png)\n"
    if sweeps:
        text += ("\n## Sweeps\n\nOne row per cell searched with local/sweep.py: trials finished of those asked for, "
                 "by state; the best trial (by SI-SDRi on the validation views), its test SI-SDRi with its 95 % "
                 "interval; the cell's own config (trial 0) on the same views; the best settings; the figure of the "
                 "sweep's history.\n\n"
                 + to_markdown(pd.DataFrame(sweeps)) + "\n")
    if grid:
        status = grid_status(grid, rows, sweeps)
        done = sum(s == "done" for _, s in status)
        text += f"\n## Grid {Path(grid).name}: {done}/{len(status)} done\n\n| cell | status |\n|---|---|\n"
        text += "".join(f"| {cell} | {state} |\n" for cell, state in status)
    io_utils.write_text(exp_root / "RESULTS.md", text)
    print(text)
    print(f"stage 4: wrote {exp_root}/RESULTS.md ({len(rows)} experiments)", flush=True)


def compare(exp_root, tag_a, tag_b, n_resamples=1000, seed=0):
    """The paired difference B - A of the mean SI-SDRi and SDRi of two experiments on the same test views,
    with its bootstrap 95 % interval over mixtures; printed and written to exp/compare_<A>_vs_<B>.json."""
    from local.evaluation.uncertainty import paired_difference

    exp_root = Path(exp_root)
    tables, views = {}, {}
    for tag in (tag_a, tag_b):
        summary = exp_root / tag / "eval" / "summary.json"
        if not summary.is_file():
            raise RecipeError(f"{summary} not found: evaluate {tag} first (./run.sh --stage 3 --tag {tag})")
        views[tag] = json.loads(summary.read_text()).get("test_views_sha256")
        tables[tag] = pd.read_csv(exp_root / tag / "eval" / "metrics.csv").set_index("mixture_id")
    if views[tag_a] != views[tag_b]:
        raise RecipeError(f"{tag_a} and {tag_b} were evaluated on different test views (test.csv differs): a paired "
                          f"comparison needs the same mixtures")
    a, b = tables[tag_a].align(tables[tag_b], join="inner", axis=0)
    out = {"a": tag_a, "b": tag_b, "n_mixtures": len(a), "n_resamples": n_resamples, "seed": seed}
    lines = [f"{tag_b} - {tag_a} on {len(a)} paired test mixtures (95 % bootstrap interval):"]
    for key in ("si_sdri", "sdri"):
        if key in a and key in b:
            out[key] = paired_difference(a[key], b[key], n_resamples, seed)
            d = out[key]
            verdict = "no difference shown" if d["ci95"][0] <= 0 <= d["ci95"][1] else "a difference"
            lines.append(f"  {key}: {d['mean']:+.2f} dB [{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}]: {verdict}")
    path = exp_root / f"compare_{tag_a}_vs_{tag_b}.json"
    io_utils.write_json(out, path)
    print("\n".join(lines) + f"\nstage 4: wrote {path}", flush=True)
    return out

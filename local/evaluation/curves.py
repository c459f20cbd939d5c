"""Training curves of an experiment: train and validation loss and learning rate against optimizer steps.

Read from the CSV logger's `logs/run<N>/metrics.csv` (one folder per run of stage 2): a resumed run continues the
step count of the run it resumed, so the runs are drawn in order on one step axis, each run's points after the
step where it resumed replacing the killed run's. Drawn on the evaluation page (stage 3, eval/curves.png) and
linked from the report (stage 4), so that a figure comes with how the model got there.
"""
import re
from pathlib import Path

import pandas as pd

from local.common import io_utils

LR_PREFIX = "lr-"


def training_log(exp_dir):
    """All runs' logged rows as one table (step, run, loss_step, loss_epoch, val_loss, lr), or None when no run
    logged anything. Steps logged by a later run replace those of earlier runs (a resume trains them again)."""
    runs = sorted((Path(exp_dir) / "logs").glob("run*/metrics.csv"),
                  key=lambda p: int(re.sub(r"\D", "", p.parent.name) or 0))
    tables = []
    for path in runs:
        try:
            table = pd.read_csv(path)
        except pd.errors.EmptyDataError:  # a run killed before its logger wrote a line
            continue
        if table.empty or "step" not in table:
            continue
        lr = [c for c in table.columns if c.startswith(LR_PREFIX)]
        table = table.assign(run=path.parent.name, lr=table[lr[0]] if lr else float("nan"))
        if tables:  # a resumed run: drop the earlier runs' rows from the step it resumed at
            first = table["step"].min()
            tables = [t[t["step"] < first] for t in tables]
        tables.append(table)
    if not tables:
        return None
    columns = ["step", "run", "epoch", "loss_step", "loss_epoch", "val_loss", "lr"]
    log = pd.concat(tables, ignore_index=True)
    return log[[c for c in columns if c in log.columns]]


def curves_figure(exp_dir, path, title):
    """eval/curves.png (or any path): losses above, learning rate below. Returns the path, or None without a log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    log = training_log(exp_dir)
    if log is None:
        return None
    fig, (ax, ax_lr) = plt.subplots(2, 1, figsize=(7, 4.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    for column, label, style in (("loss_step", "train (per logged step)", dict(alpha=0.35, linewidth=0.8)),
                                 ("loss_epoch", "train (epoch mean)", dict(marker="o", markersize=3)),
                                 ("val_loss", "validation", dict(marker="s", markersize=3))):
        if column in log:
            points = log[["step", column]].dropna()
            if not points.empty:
                ax.plot(points["step"], points[column], label=label, **style)
    ax.set_ylabel("loss")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    lr = log[["step", "lr"]].dropna()
    ax_lr.plot(lr["step"], lr["lr"], drawstyle="steps-post", color="black", linewidth=1)
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_xlabel("optimizer step")
    if not lr.empty and (lr["lr"] > 0).all():
        ax_lr.set_yscale("log")
    fig.tight_layout()
    with io_utils.atomic_path(Path(path), suffix=".png") as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
    return Path(path)

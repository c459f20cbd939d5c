"""Stage 4: one results table across every experiment in the experiments folder.

Reads exp/*/conf.yml, training.json and eval/summary.json, and writes exp/results.csv and
exp/RESULTS.md (tag, model, sources, loss, parameters, epochs, best validation loss, SI-SDRi, SDRi,
SIR, SAR, STOI, the oracle IRM figure, training time), sorted by tag. Experiments without an
evaluation are listed with their state.
"""
import json
from pathlib import Path

import pandas as pd
import yaml

from local import io_utils
from local.errors import RecipeError

COLUMNS = ["tag", "state", "model", "n_src", "loss", "pit", "n_parameters", "epochs_trained", "best_val_loss",
           "si_sdri", "sdri", "si_sdr", "sdr", "sir", "sar", "stoi", "input_si_sdr", "oracle_irm_si_sdri",
           "train_seconds", "n_test_mixtures"]


def experiment_row(exp):
    cfg = yaml.safe_load((exp / "conf.yml").read_text())
    row = {"tag": exp.name, "model": cfg["model"]["name"], "n_src": cfg["data"]["n_src"],
           "loss": cfg["loss"]["name"], "pit": cfg["loss"]["pit"]}
    training = exp / "training.json"
    summary = exp / "eval" / "summary.json"
    row["state"] = "evaluated" if summary.is_file() else ("trained" if training.is_file() else "training")
    if training.is_file():
        t = json.loads(training.read_text())
        row.update(n_parameters=t["n_parameters"], epochs_trained=t["epochs_trained"],
                   best_val_loss=t["best_val_loss"], train_seconds=t["train_seconds_this_run"])
    if summary.is_file():
        s = json.loads(summary.read_text())
        row.update({k: s.get(k) for k in COLUMNS if k in s})
        row["n_test_mixtures"] = s["n_mixtures"]
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


def report(exp_root):
    exp_root = Path(exp_root)
    experiments = sorted(p for p in exp_root.glob("*") if (p / "conf.yml").is_file())
    if not experiments:
        raise RecipeError(f"no experiments in {exp_root}/ (nothing with a conf.yml): train one first (stage 2)")
    df = pd.DataFrame([experiment_row(e) for e in experiments]).reindex(columns=COLUMNS)
    df = df.dropna(axis=1, how="all")
    io_utils.write_csv(df, exp_root / "results.csv")
    text = (f"# Results\n\nOne row per experiment in `{exp_root}/`; figures on the test views, in dB except STOI. "
            f"`oracle_irm_si_sdri` is the ideal ratio mask on the same mixtures.\n\n{to_markdown(df)}\n")
    io_utils.write_text(exp_root / "RESULTS.md", text)
    print(text)
    print(f"stage 4: wrote {exp_root}/RESULTS.md and {exp_root}/results.csv ({len(df)} experiments)", flush=True)

"""Benchmark: a quick screen of training options by validation loss after equal numbers of steps.

    python -m local.benchmarks.screen --tag stt_2src_sisdr --epochs 3 --work exp/benchmarks/screen_stt \
        --variant authors '--model.initial_mask null --optim.lr 0.001' \
        --variant mask05_lr3e-3 '--model.initial_mask 0.5 --optim.lr 0.003'

Each variant trains the tag (stages 0-2 of the recipe, fixed views, same seed, no early stop) for `--epochs`
epochs in `--work/<variant>` and reports its validation loss after every epoch, with the wall seconds it took.
The recipe's seeds make two runs of one variant take the same steps on the same batches, so variants compare at
equal steps without a second run; the seconds say what a step costs (they drift with the machine: run it alone,
and judge the quality per minute of a chosen variant with local/benchmarks/budget.py). A variant already trained
for `--epochs` in `--work` is read, not run again. Prints a table and writes `--work/screen.json`.
"""
import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

import pandas as pd

from local.benchmarks import publish
from local.training.provenance import device_name

ROOT = Path(__file__).resolve().parents[2]


def validation_curve(exp):
    """[(epoch, step, val_loss)] of the last training run of an experiment folder (its logs/run<N>/metrics.csv)."""
    runs = sorted((exp / "logs").glob("run*/metrics.csv"), key=lambda p: int(p.parent.name[3:]))
    if not runs:
        return []
    metrics = pd.read_csv(runs[-1])
    val = metrics.dropna(subset=["val_loss"])
    return [(int(r.epoch), int(r.step), float(r.val_loss)) for r in val.itertuples()]


def variant(recipe, tag, name, options, epochs, work):
    """Train (or read) one variant; returns its row."""
    exp = work / name / tag
    summary = exp / "training.json"
    done = summary.is_file() and json.loads(summary.read_text()).get("epochs_trained") == epochs
    if not done:
        if exp.exists():
            sys.exit(f"screen: {exp} holds an unfinished or different run; delete it to run variant {name} again")
        log = work / f"{name}.log"
        command = [str(recipe), "--stage", "0", "--stop_stage", "2", "--tag", tag, "--exp_dir", str(work / name),
                   "--training.epochs", str(epochs), "--training.early_stop_patience", "null",
                   "--data.dynamic_mixing", "false", *shlex.split(options)]
        print("$ " + shlex.join(command), flush=True)
        with open(log, "w") as out:
            if subprocess.run(command, cwd=work, stdout=out, stderr=subprocess.STDOUT).returncode != 0:
                sys.exit(f"screen: variant {name} failed; see {log}")
    info = json.loads(summary.read_text())
    curve = validation_curve(exp)
    return {"variant": name, "options": options, "parameters": info.get("n_parameters"),
            "train_seconds": info.get("train_seconds"),
            "val_loss": [{"epoch": e, "step": s, "val_loss": v} for e, s, v in curve]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="run.sh", help="the recipe script (run.sh, egs/<name>/run.sh)")
    parser.add_argument("--tag", required=True, help="the experiment every variant starts from")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--variant", nargs=2, action="append", metavar=("NAME", "OPTIONS"), required=True,
                        help="a name and the recipe options it adds ('' for the tag as it is)")
    parser.add_argument("--work", default="exp/benchmarks/screen", help="where data/ and the runs go")
    args = parser.parse_args(argv)
    recipe, work = (ROOT / args.recipe).resolve(), Path(args.work).resolve()
    if not recipe.is_file():
        sys.exit(f"screen: no recipe {recipe}; give --recipe run.sh or egs/<name>/run.sh")
    if args.epochs < 1:
        sys.exit(f"screen: --epochs must be at least 1, got {args.epochs}")
    names = [name for name, _ in args.variant]
    if len(set(names)) != len(names) or any(not n.replace("-", "").replace("_", "").isalnum() for n in names):
        sys.exit(f"screen: variant names must be distinct words (letters, digits, - and _), got {names}")
    for name, options in args.variant:
        try:
            shlex.split(options)
        except ValueError as error:
            sys.exit(f"screen: the options of variant {name} do not parse ({error}): {options!r}")
    work.mkdir(parents=True, exist_ok=True)
    rows = [variant(recipe, args.tag, name, options, args.epochs, work) for name, options in args.variant]
    print(f"\n{args.tag}: validation loss after each epoch (step), and training seconds")
    for r in rows:
        curve = "  ".join(f"{p['val_loss']:.2f} ({p['step']})" for p in r["val_loss"])
        print(f"{r['variant']:<20} {curve}  {r['train_seconds']:.0f} s   {r['options']}")
    command = shlex.join(["python", "-m", "local.benchmarks.screen", *(sys.argv[1:] if argv is None else argv)])
    publish({"recipe": args.recipe, "tag": args.tag, "epochs": args.epochs, "machine": device_name(),
             "command": command, "rows": rows}, work / "screen.json")


if __name__ == "__main__":
    main()

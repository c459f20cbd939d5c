"""Hyperparameter sweeps on Optuna: several configurations per grid cell, as the WildMix study ran its grid
(ten per cell, each cell's result its best configuration).

    python -m local.sweep --tag lstm_2src --sweep conf/sweeps/lstm.yml --n_trials 10 [--storage URL]
                          [--exp_dir exp --data_root data --data_dir DIR --dataset NAME] [group.key=value ...]
    (utils/sweep.sh does the same after setting up the environment)

Every trial is an ordinary experiment in <exp_dir>/<tag>/trials/<NNN>/: frozen config, provenance, checkpoints,
exact resume, `best_model.pth`. It trains for at most `trial_minutes`, is pruned from its validation curve
(Optuna's median rule) and is scored by its SI-SDRi on the *validation* views (eval_val/): selecting on the
test views would leave no unbiased test figure. When the sweep is done, the best trial is evaluated on the
test views like any experiment (its eval/ page), and <exp_dir>/<tag>/sweep/ gets `trials.csv`,
`summary.json` and `history.png`.

Trial 0 is the cell's own config (when its values lie inside the search space; `start_from_default: false` in the
sweep file turns this off), so the table shows what the search gained over the hand-set config.

Storage: by default one SQLite file, <exp_dir>/<tag>/sweep/study.db. Workers on one machine or on many share
a study through `--storage journal:/shared/path/study.log` (a journal file on a shared file system) or a
database URL (`postgresql://...`); each worker takes the next trial, and the sampler is seeded (`seed` in the
sweep file; recorded). A worker killed mid-trial leaves its trial RUNNING with a dead owner in its folder
(local/common/ownership.py): the next worker marks it failed and queues the same parameters again, to the same
folder, so the retry resumes from the trial's last checkpoint; a retry that loses its worker too (settings that
run out of memory kill every worker that tries them) is failed for good. Finished trials are never run twice:
`--n_trials` counts finished (complete or pruned) trials across all workers.

Written by hand: the pruning callback (optuna-integration's targets the `lightning` package namespace, these
recipes use `pytorch_lightning`) and the re-queueing of dead trials (Optuna's heartbeat exists for database
storages only, not for the journal file a cluster without a database uses).
"""
import argparse
import json
from pathlib import Path

import optuna
import pandas as pd
import pytorch_lightning as pl
import yaml

from local.common import io_utils, ownership
from local.common.cli import sweep_parser
from local.common.config import load_config
from local.common.errors import RecipeError, exit_on_recipe_error
from local.data.sources import load_sources
from local.data.views import make_views
from local.evaluation.evaluate import evaluate
from local.training.train import train

FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def load_sweep(path):
    """The sweep file: {seed, trial_minutes, pruner: {n_startup_trials, n_warmup_steps}, overrides: [key=value set in
    every trial], params: {key: spec}} with spec {type: float|int, low, high, log?, step?} or
    {type: categorical, choices: [...]}."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"sweep file {path} not found (examples: conf/sweeps/*.yml)")
    sweep = yaml.safe_load(path.read_text()) or {}
    params = sweep.get("params")
    if not isinstance(params, dict) or not params:
        raise RecipeError(f"{path}: 'params' must map config keys to search ranges, e.g. optim.lr: "
                          f"{{type: float, low: 1e-4, high: 1e-2, log: true}}")
    for key, spec in params.items():
        kind = (spec or {}).get("type")
        if kind in ("float", "int"):
            if not all(k in spec for k in ("low", "high")) or not spec["low"] < spec["high"]:
                raise RecipeError(f"{path}: params.{key} needs low < high, got {spec}")
        elif kind == "categorical":
            if not spec.get("choices"):
                raise RecipeError(f"{path}: params.{key} needs a non-empty 'choices' list")
        else:
            raise RecipeError(f"{path}: params.{key}.type must be float, int or categorical, got {kind!r}")
    sweep.setdefault("seed", 0)
    sweep.setdefault("trial_minutes", 5)
    sweep.setdefault("pruner", {})
    sweep.setdefault("overrides", [])
    sweep["path"] = str(path)
    if not isinstance(sweep["overrides"], list) or not all(isinstance(o, str) and "=" in o for o in sweep["overrides"]):
        raise RecipeError(f"{path}: 'overrides' must be a list of 'group.key=value' set in every trial, "
                          f"e.g. ['training.val_check_interval=0.25']")
    return sweep


def check_space(tag, overrides, sweep):
    """Builds the config and the model at both ends of every range before any trial runs: a key the config or the
    model does not take is one error now, not a failed trial after a failed trial."""
    from local.models import build_model

    for end in (0, -1):
        values = [f"{key}="
                  f"{json.dumps(spec['choices'][end] if spec['type'] == 'categorical' else spec[('low', 'high')[end]])}"
                  for key, spec in sweep["params"].items()]
        build_model(load_config(tag, overrides + sweep["overrides"] + values))  # RecipeError naming the key


def suggest(trial, params):
    """Config overrides 'key=value' for one trial's draw of every swept key."""
    overrides = []
    for key, spec in params.items():
        if spec["type"] == "float":
            value = trial.suggest_float(key, float(spec["low"]), float(spec["high"]), log=bool(spec.get("log")))
        elif spec["type"] == "int":
            value = trial.suggest_int(key, int(spec["low"]), int(spec["high"]), step=int(spec.get("step", 1)),
                                      log=bool(spec.get("log")))
        else:
            value = trial.suggest_categorical(key, list(spec["choices"]))
        overrides.append(f"{key}={json.dumps(value)}")
    return overrides


def make_storage(url, sweep_dir):
    if not url:
        sweep_dir.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{(sweep_dir / 'study.db').resolve()}"
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend

        Path(url[len("journal:"):]).parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(url[len("journal:"):]))
    return url


class PruneOnValidation(pl.Callback):
    """Reports -val_loss after every validation and stops the training when Optuna's pruner says so.

    The step is the validation's index: validations come every `training.val_check_interval` of an epoch, so
    trials with other batch sizes are compared after the same number of training mixtures."""

    def __init__(self, trial):
        self.trial, self.pruned, self.validations = trial, False, 0

    def on_validation_end(self, trainer, pl_module):
        if trainer.sanity_checking or "val_loss" not in trainer.callback_metrics:
            return
        self.trial.report(-float(trainer.callback_metrics["val_loss"]), step=self.validations)
        self.validations += 1
        if self.trial.should_prune():
            self.pruned, trainer.should_stop = True, True


def trial_folder(trial):
    return trial.user_attrs.get("folder") or f"{trial.number:03d}"


def requeue_dead_trials(study, trials_dir):
    """RUNNING trials whose folder has no live owner were killed: fail them and queue their parameters again,
    to the same folder (so the retry resumes from its checkpoint)."""
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        folder = trials_dir / trial_folder(trial)
        lock = folder / ownership.LOCK_NAME
        if not lock.exists():
            continue  # just started by a worker that has not taken its folder yet (or one killed before it did)
        if ownership.is_stale(ownership._read(lock), lock):
            study._storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.FAIL)
            if trial.user_attrs.get("retry_of") is not None:  # its settings killed two workers (out of memory?)
                print(f"sweep: trial {trial.number} (a retry of trial {trial.user_attrs['retry_of']}) lost its worker "
                      f"too; failed, not queued again (see {folder}; out of memory?)", flush=True)
                continue
            study.enqueue_trial(trial.params, user_attrs={"folder": trial_folder(trial), "retry_of": trial.number,
                                                          "default": bool(trial.user_attrs.get("default"))})
            print(f"sweep: trial {trial.number} lost its worker; queued again in {folder}", flush=True)


def default_values(cfg, params):
    """The config's own values of the swept keys, or None if one lies outside its range (or choices)."""
    values = {}
    for key, spec in params.items():
        value = cfg
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if spec["type"] == "categorical":
            inside = value in spec["choices"]
        else:
            inside = isinstance(value, (int, float)) and spec["low"] <= value <= spec["high"]
            inside = inside and (spec["type"] == "float" or (value - spec["low"]) % spec.get("step", 1) == 0)
        if not inside:
            return None
        values[key] = value
    return values


def enqueue_default(study, cfg, params):
    """Trial 0 is the cell's own config, so that the sweep's table shows what the search gained over it."""
    values = default_values(cfg, params)
    if values is None:
        print("sweep: the config's own values lie outside the search space; no default trial", flush=True)
        return
    study.enqueue_trial(values, user_attrs={"default": True})


def run_trial(trial, args, sweep, trials_dir, data_dir):
    folder = trial_folder(trial)
    trial.set_user_attr("folder", folder)
    overrides = (args.overrides + sweep["overrides"] + suggest(trial, sweep["params"])
                 + [f"training.max_minutes={sweep['trial_minutes']}"])
    cfg = load_config(args.tag, overrides)
    exp_dir = trials_dir / folder
    print(f"sweep: trial {trial.number} in {exp_dir}: "
          f"{' '.join(overrides[len(args.overrides) + len(sweep['overrides']):])}",
          flush=True)
    with ownership.ExperimentOwnership(exp_dir):
        _, root = load_sources(data_dir)
        views = make_views(cfg["data"], data_dir, announce_skip=False)
        pruning = PruneOnValidation(trial)
        summary = train(cfg, exp_dir, views, root, extra_callbacks=[pruning])
        trial.set_user_attr("train_seconds", summary and summary.get("train_seconds"))
        if pruning.pruned:
            raise optuna.TrialPruned()
        val = evaluate(cfg, exp_dir, views, root, nj=args.nj, out_dir=exp_dir / "eval_val", split="val")
    return val["si_sdri"]


def test_figures(trial, args, sweep, trials_dir, data_dir):
    """Evaluates a finished trial on the test views (its eval/ page); its headline figures, or None while
    another worker is evaluating it (that worker writes the summary after this one)."""
    exp_dir = trials_dir / trial_folder(trial)
    cfg = load_config(args.tag, args.overrides + sweep["overrides"]
                      + [f"{k}={json.dumps(v)}" for k, v in trial.params.items()]
                      + [f"training.max_minutes={sweep['trial_minutes']}"])
    try:
        with ownership.ExperimentOwnership(exp_dir):
            _, data_root = load_sources(data_dir)
            views = make_views(cfg["data"], data_dir, announce_skip=False)
            test = evaluate(cfg, exp_dir, views, data_root, nj=args.nj)
    except ownership.ExperimentBusy:
        print(f"sweep: trial {trial.number} is being evaluated by another worker", flush=True)
        return None
    return {k: test.get(k) for k in ("si_sdri", "si_sdri_ci95", "sdri", "bound", "bound_si_sdri", "n_mixtures")}


def write_summary(study, sweep_dir, trials_dir, best_test, sweep, args, default_test=None):
    rows = []
    for t in study.get_trials(deepcopy=False):
        complete = t.state == optuna.trial.TrialState.COMPLETE
        last = t.intermediate_values.get(t.last_step) if t.last_step is not None else None
        rows.append({"trial": t.number, "state": t.state.name.lower(), "val_si_sdri": t.value if complete else None,
                     "last_neg_val_loss": last,
                     "folder": t.user_attrs.get("folder"), "retry_of": t.user_attrs.get("retry_of"),
                     "default": bool(t.user_attrs.get("default")),
                     "train_seconds": t.user_attrs.get("train_seconds"),
                     "last_step": t.last_step, **{f"param {k}": v for k, v in t.params.items()}})
    df = pd.DataFrame(rows)
    io_utils.write_csv(df, sweep_dir / "trials.csv")
    counts = {state: int(n) for state, n in df["state"].value_counts().items()} if len(df) else {}
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    best = max(complete, key=lambda t: t.value) if complete else None
    default = next((t for t in complete if t.user_attrs.get("default")), None)
    seconds = df.get("train_seconds", pd.Series(dtype=float))
    pruned_s = seconds[df["state"] == "pruned"].dropna() if len(df) else seconds
    complete_s = seconds[df["state"] == "complete"].dropna() if len(df) else seconds
    summary = {"tag": args.tag, "sweep": str(args.sweep), "seed": sweep["seed"],
               "trial_minutes": sweep["trial_minutes"],
               "n_trials": args.n_trials, "counts": counts,
               "best_trial": best.number if best else None, "best_folder": trial_folder(best) if best else None,
               "best_params": best.params if best else None, "best_val_si_sdri": best.value if best else None,
               "best_test": best_test, "default_trial": default.number if default else None,
               "default_val_si_sdri": default.value if default else None,
               "default_test": best_test if default and best and default.number == best.number else default_test,
               # compute saved by pruning: what the pruned trials would have cost at the median complete trial's
               # training time, less what they did cost
               "train_seconds_complete": float(complete_s.sum()), "train_seconds_pruned": float(pruned_s.sum()),
               "train_seconds_saved_by_pruning": (float(len(pruned_s) * complete_s.median() - pruned_s.sum())
                                                  if len(complete_s) and len(pruned_s) else 0.0)}
    io_utils.write_json(summary, sweep_dir / "summary.json")
    history_figure(df, sweep_dir / "history.png", args.tag)
    return summary


def history_figure(df, path, tag):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    if not len(df):
        df = pd.DataFrame(columns=["trial", "state", "val_si_sdri"])
    done = df[df["state"] == "complete"]
    if len(done):
        ax.plot(done["trial"], done["val_si_sdri"], "o", label="trial (validation SI-SDRi)")
        ax.plot(done["trial"], done["val_si_sdri"].cummax(), "-", label="best so far")
    for t in df[df["state"] == "pruned"]["trial"]:
        ax.axvline(t, color="tab:gray", alpha=0.3, lw=1)
    ax.set_xlabel("trial (grey: pruned)")
    ax.set_ylabel("SI-SDRi (dB)")
    ax.set_title(f"sweep of {tag}", fontsize="medium")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    with io_utils.atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def run_sh_overrides(extra):
    """run.sh's `--group.key value` (and `--group.key=value`) as overrides, so that utils/run_grid.sh hands the
    same options to run.sh and to a sweep; any other unknown option is an error."""
    overrides, i = [], 0
    while i < len(extra):
        arg = extra[i]
        name = arg[2:].split("=", 1)[0] if arg.startswith("--") else ""
        if "." not in name:
            raise RecipeError(f"python -m local.sweep: unknown option {arg!r} (see --help; config keys are set as "
                              f"--group.key value or group.key=value)")
        if "=" in arg:
            overrides.append(arg[2:])
            i += 1
        elif i + 1 < len(extra):
            overrides.append(f"{name}={extra[i + 1]}")
            i += 2
        else:
            raise RecipeError(f"python -m local.sweep: option {arg} needs a value")
    return overrides


@exit_on_recipe_error
def main(argv=None):
    parser = sweep_parser()
    args, extra = parser.parse_known_args(argv)
    args.overrides = list(args.overrides) + run_sh_overrides(extra)
    if args.n_trials < 1:
        raise RecipeError(f"--n_trials must be at least 1, got {args.n_trials}")
    if args.nj < 1:
        raise RecipeError(f"--nj must be at least 1, got {args.nj}")
    sweep = load_sweep(args.sweep)
    if args.trial_minutes is not None:
        if args.trial_minutes <= 0:
            raise RecipeError(f"--trial_minutes must be positive, got {args.trial_minutes}")
        sweep["trial_minutes"] = args.trial_minutes
    from local.recipe import resolve_config  # --data_dir / --dataset as run.sh has them

    base_args = argparse.Namespace(tag=args.tag, data_dir=args.data_dir, dataset=args.dataset, overrides=args.overrides)
    cfg, args.overrides = resolve_config(base_args)
    data_dir = Path(args.data_root) / cfg["data"]["dataset"]
    root = Path(args.exp_dir) / args.tag
    trials_dir, sweep_dir = root / "trials", root / "sweep"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=int(sweep["pruner"].get("n_startup_trials", 3)),
                                         n_warmup_steps=int(sweep["pruner"].get("n_warmup_steps", 0)))
    study = optuna.create_study(study_name=args.tag, storage=make_storage(args.storage, sweep_dir),
                                direction="maximize", sampler=optuna.samplers.TPESampler(seed=int(sweep["seed"])),
                                pruner=pruner, load_if_exists=True)
    if sweep.get("start_from_default", True) and not study.get_trials(deepcopy=False):
        enqueue_default(study, cfg, sweep["params"])
    check_space(args.tag, args.overrides, sweep)
    requeue_dead_trials(study, trials_dir)
    done = len(study.get_trials(deepcopy=False, states=FINISHED))
    if done < args.n_trials:
        print(f"sweep: {done} of {args.n_trials} trials finished; running the rest in this worker", flush=True)
        study.optimize(lambda t: run_trial(t, args, sweep, trials_dir, data_dir), catch=(ownership.ExperimentBusy,),
                       callbacks=[optuna.study.MaxTrialsCallback(args.n_trials, states=FINISHED),
                                  # the table after every trial, so that the report follows a running sweep
                                  lambda study, _: write_summary(study, sweep_dir, trials_dir, None, sweep, args)])
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    best_test = default_test = None
    if complete and len(study.get_trials(deepcopy=False, states=FINISHED)) >= args.n_trials:
        best_test = test_figures(study.best_trial, args, sweep, trials_dir, data_dir)
        # the cell's own config on the same test views: what the search gained, with both intervals
        default = next((t for t in complete if t.user_attrs.get("default")), None)
        if default is not None and default.number != study.best_trial.number:
            default_test = test_figures(default, args, sweep, trials_dir, data_dir)
    summary = write_summary(study, sweep_dir, trials_dir, best_test, sweep, args, default_test)
    print(f"sweep: {summary['counts']}; best trial {summary['best_trial']} (validation SI-SDRi "
          f"{summary['best_val_si_sdri']}), test {best_test}; wrote {sweep_dir}/summary.json, trials.csv, history.png",
          flush=True)


if __name__ == "__main__":
    main()

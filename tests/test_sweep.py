"""Sweeps on Optuna (local/sweep.py) on a tiny config: trials as experiments, a killed worker's trial resumed and
never counted twice, two workers sharing one study."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import TINY_RECIPE

ROOT = Path(__file__).resolve().parent.parent

TINY = {**TINY_RECIPE, "model": {"hidden_size": 16, "n_layers": 1},  # inside the swept range: trial 0
        "training": {"epochs": 3, "batch_size": 4, "num_workers": 0, "checkpoint_every_n_steps": 2, "threads": 1},
        "eval": {"n_examples": 0}}
SWEEP = {"seed": 3, "trial_minutes": 2, "pruner": {"n_startup_trials": 5},
         "overrides": ["training.val_check_interval=0.5"],
         "params": {"optim.lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
                    "model.hidden_size": {"type": "int", "low": 8, "high": 24, "step": 8}}}


@pytest.fixture
def work(tmp_path):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "tiny.yml").write_text(yaml.safe_dump(TINY))
    (tmp_path / "sweep.yml").write_text(yaml.safe_dump(SWEEP))
    prep = subprocess.run([str(ROOT / "run.sh"), "--tag", "tiny", "--stop_stage", "1"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert prep.returncode == 0, prep.stderr[-2000:]
    return tmp_path


def sweep(work, *args, **popen):
    command = [sys.executable, "-m", "local.sweep", "--tag", "tiny", "--sweep", "sweep.yml", *args]
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    if popen:
        return subprocess.Popen(command, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)
    return subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=900)


def test_a_killed_worker_loses_no_trial_and_counts_none_twice(work):
    """Worker 1 is killed with SIGKILL inside trial 0 (after a step checkpoint); worker 2 marks it failed,
    runs its parameters again in the same folder (resuming the checkpoint), and finishes the sweep: three
    finished trials, the retry among them, none run twice; the best is evaluated on the test views."""
    first = sweep(work, "--n_trials", "3", popen=True)
    checkpoint = work / "exp" / "tiny" / "trials" / "000" / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while not checkpoint.is_file() and time.time() < deadline and first.poll() is None:
        time.sleep(0.2)
    assert checkpoint.is_file() and first.poll() is None, "the first worker never reached a checkpoint"
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    second = sweep(work, "--n_trials", "3")
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "trial 0 lost its worker; queued again" in second.stdout and "resuming from" in second.stdout
    trials = pd.read_csv(work / "exp" / "tiny" / "sweep" / "trials.csv")
    finished = trials[trials["state"].isin(["complete", "pruned"])]
    assert len(finished) == 3 and list(trials[trials["state"] == "fail"]["trial"]) == [0]
    assert finished["folder"].astype(int).tolist().count(0) == 1  # the retry went to trial 0's folder
    assert trials.loc[trials["folder"].astype(int) == 0, "retry_of"].dropna().tolist() == [0]
    assert finished["folder"].nunique() == 3
    summary = json.loads((work / "exp" / "tiny" / "sweep" / "summary.json").read_text())
    best_folder = trials.loc[trials["trial"] == summary["best_trial"], "folder"].astype(int).item()
    best = work / "exp" / "tiny" / "trials" / f"{best_folder:03d}"
    test = json.loads((best / "eval" / "summary.json").read_text())
    assert summary["best_test"]["si_sdri"] == pytest.approx(test["si_sdri"])
    val = json.loads((best / "eval_val" / "summary.json").read_text())
    assert summary["best_val_si_sdri"] == pytest.approx(val["si_sdri"]) == pytest.approx(trials["val_si_sdri"].max())
    assert val["n_mixtures"] == 8 and test["n_mixtures"] == 6  # selected on val, reported on test
    for folder in finished["folder"].astype(int):
        frozen = yaml.safe_load((work / "exp" / "tiny" / "trials" / f"{folder:03d}" / "conf.yml").read_text())
        row = trials[trials["folder"].astype(int) == folder].iloc[-1]
        assert frozen["optim"]["lr"] == pytest.approx(row["param optim.lr"])  # the trial's own config, frozen
        assert frozen["training"]["val_check_interval"] == 0.5  # the sweep file's fixed overrides
    assert trials.loc[trials["state"] != "complete", "val_si_sdri"].isna().all()  # only complete trials are scored
    assert (work / "exp" / "tiny" / "sweep" / "history.png").is_file()
    assert summary["counts"] == trials["state"].value_counts().to_dict() and summary["counts"]["fail"] == 1
    # trial 0 (and its retry) is the config's own setting, the reference the search is judged against
    defaults = trials[trials["default"]]
    assert len(defaults) == 2 and set(defaults["folder"].astype(int)) == {0}
    assert (defaults["param optim.lr"].tolist() == [0.001, 0.001]
            and defaults["param model.hidden_size"].tolist() == [16, 16])
    default_eval = json.loads((work / "exp" / "tiny" / "trials" / "000" / "eval" / "summary.json").read_text())
    assert summary["default_test"]["si_sdri"] == pytest.approx(default_eval["si_sdri"])  # both on the test views
    assert summary["default_val_si_sdri"] == pytest.approx(
        trials.loc[trials["default"] & (trials["state"] == "complete"), "val_si_sdri"].item())
    # the same command once more runs nothing (three trials are finished)
    again = sweep(work, "--n_trials", "3")
    assert again.returncode == 0 and "sweep: trial" not in again.stdout
    assert len(pd.read_csv(work / "exp" / "tiny" / "sweep" / "trials.csv")) == len(trials)
    # a grid file asking for 3 trials per cell: utils/run_grid.sh runs the cell's sweep (finished: nothing to do)
    # and the report shows the sweep's trials by state and its best trial as a row of the results table
    (work / "sweeps").mkdir()
    (work / "sweeps" / "lstm.yml").write_text(yaml.safe_dump(SWEEP))
    (work / "grid.yml").write_text(f"trials: 3\nsweeps: {work / 'sweeps'}\ncells:\n  - tiny\n")
    grid = subprocess.run([str(ROOT / "utils" / "run_grid.sh"), str(work / "grid.yml")], cwd=work,
                          capture_output=True, text=True, timeout=600)
    assert grid.returncode == 0, grid.stdout[-2000:] + grid.stderr[-2000:]
    assert "cell 1/1: tiny, a sweep of 3 configurations" in grid.stdout and "sweep: trial" not in grid.stdout
    results = (work / "exp" / "RESULTS.md").read_text()
    sweep_line = next(line for line in results.splitlines() if line.startswith("| tiny |"))
    cells = [c.strip() for c in sweep_line.strip("|").split("|")]
    assert cells[1:6] == ["3/3", str(summary["counts"].get("complete", 0)), str(summary["counts"].get("pruned", 0)),
                          "1", "0"]  # finished, complete, pruned, failed, running
    assert cells[6] == f"{best_folder:03d}" and float(cells[8]) == pytest.approx(test["si_sdri"], abs=0.01)
    assert f"| tiny/trials/{best_folder:03d} | done |" in results
    assert "| tiny | done (sweep, 3/3 finished" in results  # the grid's status of the cell


def test_two_workers_share_one_journal_study_and_split_its_trials(work):
    storage = f"journal:{work / 'shared' / 'study.log'}"
    workers = [sweep(work, "--n_trials", "3", "--storage", storage, popen=True) for _ in range(2)]
    outputs = [w.communicate(timeout=900)[0] for w in workers]
    assert all(w.returncode == 0 for w in workers), outputs
    ran = [{line.split()[2] for line in out.splitlines() if line.startswith("sweep: trial ") and " in " in line}
           for out in outputs]
    assert ran[0] and ran[1] and not ran[0] & ran[1]  # each took trials, none took the same one
    trials = pd.read_csv(work / "exp" / "tiny" / "sweep" / "trials.csv")
    assert 3 <= len(trials[trials["state"].isin(["complete", "pruned"])]) <= 4  # the last one may overlap
    assert trials["folder"].nunique() == len(trials)


def test_pruning_reports_each_validation_and_stops_the_training():
    from types import SimpleNamespace

    import torch

    from local.sweep import PruneOnValidation

    class Trial:
        def __init__(self):
            self.reports = []

        def report(self, value, step):
            self.reports.append((step, value))

        def should_prune(self):
            return len(self.reports) >= 2

    trial = Trial()
    callback = PruneOnValidation(trial)
    trainer = SimpleNamespace(sanity_checking=True, callback_metrics={"val_loss": torch.tensor(3.0)}, current_epoch=0,
                              should_stop=False)
    callback.on_validation_end(trainer, None)
    assert trial.reports == []  # the sanity check is not a validation
    trainer.sanity_checking = False
    callback.on_validation_end(trainer, None)
    assert trial.reports == [(0, -3.0)] and not trainer.should_stop and not callback.pruned
    trainer.current_epoch, trainer.callback_metrics = 1, {"val_loss": torch.tensor(2.5)}
    callback.on_validation_end(trainer, None)
    assert trial.reports[-1] == (1, -2.5) and trainer.should_stop and callback.pruned


def test_sweep_files_are_checked_with_the_key_named(tmp_path):
    from local.common.errors import RecipeError
    from local.sweep import load_sweep

    bad = tmp_path / "bad.yml"
    bad.write_text(yaml.safe_dump({"params": {"optim.lr": {"type": "float", "low": 0.1, "high": 0.01}}}))
    with pytest.raises(RecipeError, match=r"bad.yml: params.optim.lr needs low < high"):
        load_sweep(bad)
    bad.write_text(yaml.safe_dump({"overrides": "training.epochs=3", "params": {"optim.lr": {"type": "categorical",
                                                                                           "choices": [0.1]}}}))
    with pytest.raises(RecipeError, match=r"bad.yml: 'overrides' must be a list of 'group.key=value'"):
        load_sweep(bad)
    bad.write_text(yaml.safe_dump({"params": {"model.x": {"type": "uniform"}}}))
    with pytest.raises(RecipeError, match=r"params.model.x.type must be float, int or categorical"):
        load_sweep(bad)


@pytest.mark.parametrize("family", ["lstm", "stt", "vtf", "gab", "drnn", "srnn"])
def test_every_search_space_names_keys_its_model_accepts(family):
    """Each conf/sweeps/<family>.yml builds a model at both ends of every range (a wrong key fails here,
    not in the tenth trial of a cluster job)."""
    from local.sweep import check_space, load_sweep

    check_space(f"{family}_2src", [], load_sweep(ROOT / "conf" / "sweeps" / f"{family}.yml"))  # raises if not


def test_a_search_space_with_a_key_the_config_does_not_take_stops_before_any_trial(tmp_path):
    from local.common.errors import RecipeError
    from local.sweep import check_space, load_sweep

    bad = tmp_path / "bad.yml"
    bad.write_text(yaml.safe_dump({"params": {"training.batch_sise": {"type": "categorical", "choices": [8, 16]}}}))
    with pytest.raises(RecipeError, match="batch_sise"):
        check_space("lstm_2src", [], load_sweep(bad))
    bad.write_text(yaml.safe_dump({"params": {"model.hidden_sise": {"type": "int", "low": 8, "high": 16}}}))
    with pytest.raises(RecipeError, match="hidden_sise"):
        check_space("lstm_2src", [], load_sweep(bad))


def test_the_default_trial_is_the_configs_own_values_when_inside_the_space():
    from local.common.config import load_config
    from local.sweep import default_values, load_sweep

    params = load_sweep(ROOT / "conf" / "sweeps" / "lstm.yml")["params"]
    cfg = load_config("lstm_2src")
    assert default_values(cfg, params) == {"optim.lr": cfg["optim"]["lr"], "model.hidden_size": 128,
                                           "model.n_layers": 3, "model.dropout": 0.0, "training.batch_size": 16}
    assert default_values(load_config("lstm_2src", ["model.hidden_size=100"]), params) is None  # off the step grid
    assert default_values(load_config("lstm_2src", ["training.batch_size=12"]), params) is None  # not a choice


def test_grid_files_ask_for_sweeps_with_clear_errors(tmp_path):
    from local.common.errors import RecipeError
    from local.common.grid import load_grid

    grid = tmp_path / "g.yml"
    grid.write_text("trials: 10\ncells: [lstm_2src, stt_3src, gab_5src_corr]\n")
    plan = load_grid(grid)
    assert plan["trials"] == 10
    assert {c: Path(s).name for c, s in plan["sweeps"].items()} == {"lstm_2src": "lstm.yml", "stt_3src": "stt.yml",
                                                                   "gab_5src_corr": "gab.yml"}
    grid.write_text("trials: 10\ncells: [sudormrf_2src]\n")
    with pytest.raises(RecipeError, match=r"cell sudormrf_2src \(model sudormrf\) has no search space"):
        load_grid(grid)
    grid.write_text("trials: 0\ncells: [lstm_2src]\n")
    with pytest.raises(RecipeError, match=r"g.yml: 'trials' must be a whole number >= 1"):
        load_grid(grid)
    assert load_grid(ROOT / "conf" / "grids" / "wildmix.yml")["trials"] == 1


def test_a_dead_trial_is_queued_again_once_not_forever(tmp_path):
    """A trial whose worker died is queued again into its folder; if the retry's worker dies too (settings that run
    out of memory kill every worker), it is failed for good instead of killing worker after worker."""
    import socket

    import optuna

    from local.common import ownership
    from local.sweep import requeue_dead_trials

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    dead = {"host": socket.gethostname(), "pid": 2 ** 22 + 12345, "pid_start": None}  # above pid_max: never alive
    first = study.ask({"optim.lr": optuna.distributions.FloatDistribution(1e-4, 1e-2)})
    first.set_user_attr("folder", "000")
    (tmp_path / "000").mkdir()
    (tmp_path / "000" / ownership.LOCK_NAME).write_text(json.dumps(dead))
    requeue_dead_trials(study, tmp_path)
    waiting = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert study.trials[0].state == optuna.trial.TrialState.FAIL and len(waiting) == 1
    assert waiting[0].user_attrs["folder"] == "000" and waiting[0].user_attrs["retry_of"] == 0
    retry = study.ask()  # the queued retry, taken by the next worker, which dies as well
    assert retry.number == 1 and retry.user_attrs["retry_of"] == 0
    requeue_dead_trials(study, tmp_path)
    assert study.trials[1].state == optuna.trial.TrialState.FAIL
    assert not study.get_trials(states=(optuna.trial.TrialState.WAITING,))

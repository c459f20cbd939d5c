"""The whole recipe through run.sh, stages 0 to 4, on a tiny config, then the idempotence and error paths."""
import json
import os
import socket
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import TINY_RECIPE

ROOT = Path(__file__).resolve().parent.parent

TINY = TINY_RECIPE


def run(cwd, *args):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run([str(ROOT / "run.sh"), *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=600)


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    work = tmp_path_factory.mktemp("recipe")
    (work / "conf").mkdir()
    (work / "conf" / "tiny.yml").write_text(yaml.safe_dump(TINY))
    result = run(work, "--tag", "tiny", "--nj", "2", "--training.loggers", "[csv, tensorboard]")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return work, result


def test_every_stage_writes_its_files(recipe):
    work, result = recipe
    for n in range(5):
        assert f"stage {n}:" in result.stdout
    exp = work / "exp" / "tiny"
    for rel in ["conf.yml", "best_model.pth", "training.json", "checkpoints/last.ckpt", "logs/run1/metrics.csv",
                "eval/metrics.csv", "eval/per_source.csv", "eval/summary.json", "eval/index.html",
                "eval/per_category.csv", "eval/per_category.png"]:
        assert (exp / rel).is_file(), rel
    assert (work / "data" / "synth" / "sources.csv").is_file()
    assert {p.name for p in (work / "data" / "synth" / "2src").iterdir()} >= {"train.csv", "val.csv", "test.csv"}
    assert (work / "exp" / "RESULTS.md").read_text().count("| tiny |") == 1
    frozen = yaml.safe_load((exp / "conf.yml").read_text())
    assert frozen["model"]["hidden_size"] == 16 and frozen["training"]["epochs"] == 2


def test_training_curves_reach_the_page_the_report_and_tensorboard(recipe):
    """The training curves are on the evaluation page and linked from the report; TensorBoard's event file
    holds the same validation losses as the CSV log (read back with TensorBoard's own reader)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    work, _ = recipe
    exp = work / "exp" / "tiny"
    assert (exp / "eval" / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert 'src="curves.png"' in (exp / "eval" / "index.html").read_text()
    assert "[figure](tiny/eval/curves.png)" in (work / "exp" / "RESULTS.md").read_text()
    events = list((exp / "tensorboard" / "run1").glob("events.out.tfevents.*"))
    assert len(events) == 1
    accumulator = EventAccumulator(str(events[0].parent))
    accumulator.Reload()
    logged = [e.value for e in accumulator.Scalars("val_loss")]
    csv = pd.read_csv(exp / "logs" / "run1" / "metrics.csv")["val_loss"].dropna().tolist()
    assert len(logged) == len(csv) == 2 and logged == pytest.approx(csv, abs=1e-5)


def test_evaluation_figures_are_consistent(recipe):
    work, _ = recipe
    ev = work / "exp" / "tiny" / "eval"
    summary = json.loads((ev / "summary.json").read_text())
    rows = pd.read_csv(ev / "metrics.csv")
    per_source = pd.read_csv(ev / "per_source.csv")
    assert len(rows) == summary["n_mixtures"] == 6 and len(per_source) == 12
    for key in ["si_sdr", "sdr", "sir", "sar", "input_si_sdr", "si_sdri", "sdri", "oracle_ratio_si_sdri",
                "oracle_psm_si_sdri", "oracle_ibm_si_sdri", "fixed_order_si_sdri"]:
        assert summary[key] == pytest.approx(rows[key].mean(), abs=1e-3), key
        assert summary[key] == pytest.approx(per_source[key].mean(), abs=1e-3), key
    assert "stoi" not in summary and "pesq" not in summary  # environmental sounds: no speech metrics
    assert summary["loss_domain"] == "magnitude" and summary["bound"] == "psm"  # LSTM with sigmoid masks
    assert summary["share_of_bound"] == pytest.approx(summary["si_sdri"] / summary["oracle_psm_si_sdri"], abs=1e-3)
    assert summary["permuted_share"] == pytest.approx((rows["permutation"] != "0 1").mean(), abs=1e-3)
    low, high = summary["si_sdri_ci95"]
    assert low <= summary["si_sdri"] <= high and low < high
    assert summary["si_sdri"] == pytest.approx(summary["si_sdr"] - summary["input_si_sdr"], abs=1e-3)
    assert rows["si_sdr"].mean() == pytest.approx(per_source["si_sdr"].mean(), abs=1e-3)
    assert summary["oracle_ratio_si_sdri"] > 8  # the ratio mask separates synth categories well
    assert summary["oracle_psm_si_sdri"] > summary["oracle_ratio_si_sdri"]  # the PSM is the [0, 1] bound
    assert set(rows["permutation"]) <= {"0 1", "1 0"}
    examples = sorted(p.name for p in (ev / "examples").iterdir())
    assert examples == sorted(summary["examples"]) and len(examples) == 2
    assert len(list((ev / "examples" / examples[0]).glob("*.wav"))) == 5  # mixture + 2 refs + 2 estimates
    assert (ev / "examples" / examples[0] / "spectrograms.png").is_file()


def test_second_run_skips_finished_stages(recipe):
    work, _ = recipe
    before = (work / "exp" / "tiny" / "best_model.pth").stat().st_mtime_ns
    again = run(work, "--tag", "tiny", "--stop_stage", "3")
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.count("skipped") == 4, again.stdout
    assert (work / "exp" / "tiny" / "best_model.pth").stat().st_mtime_ns == before


def test_stage_3_alone_reevaluates_without_training(recipe):
    work, _ = recipe
    (work / "exp" / "tiny" / "eval" / "summary.json").unlink()
    result = run(work, "--stage", "3", "--stop_stage", "3", "--tag", "tiny")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "stage 2" not in result.stdout and "evaluating tiny on 6 test mixtures" in result.stdout
    assert (work / "exp" / "tiny" / "eval" / "summary.json").is_file()


def test_stage_3_evaluates_the_frozen_config(recipe):
    """Stage 3 uses exp/<tag>/conf.yml: a conflicting command-line key is refused by name; an edited conf/<tag>.yml
    is reported and not used; eval.* may change."""
    work, _ = recipe
    refused = run(work, "--stage", "3", "--tag", "tiny", "--filterbank.stride", "32")
    assert refused.returncode == 1 and "filterbank.stride = 32 (trained with 64)" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    other = run(work, "--stage", "3", "--tag", "tiny", "--dataset", "other")
    assert other.returncode == 1 and "data.dataset = 'other' (trained with 'synth')" in other.stderr
    conf = work / "conf" / "tiny.yml"
    original = conf.read_text()
    try:
        conf.write_text(yaml.safe_dump(dict(TINY, filterbank={"stride": 32})))
        edited = run(work, "--stage", "3", "--stop_stage", "3", "--tag", "tiny", "--eval.bootstrap", "200")
    finally:
        conf.write_text(original)
    assert edited.returncode == 0, edited.stderr[-2000:]
    assert "now differs in filterbank.stride (not used)" in edited.stdout
    summary = json.loads((work / "exp" / "tiny" / "eval" / "summary.json").read_text())
    assert summary["filterbank"]["stride"] == 64 and summary["eval_config"]["bootstrap"] == 200


def test_bad_values_and_empty_stage_ranges_are_one_line_errors(recipe):
    work, _ = recipe
    for args, words in [(["--optim.lr", "abc"], "optim.lr = 'abc'"),
                        (["--training.batch_size", "0"], "training.batch_size = 0"),
                        (["--filterbank.stride", "0"], "filterbank.stride = 0"),
                        (["--training.epochs", "-1"], "training.epochs = -1"),
                        (["--data.n_mixtures", "{train:200,val:20,test:40}"], "data.n_mixtures"),
                        (["--stage", "7"], "selects no stage"),
                        (["--stage", "3", "--stop_stage", "1"], "selects no stage")]:
        result = run(work, "--tag", "tiny", "--exp_dir", "exp_bad",
                     *(args if "--stage" in args else ["--stage", "2", *args]))
        assert result.returncode == 1, args
        assert len(result.stderr.strip().splitlines()) == 1 and words in result.stderr, (args, result.stderr)
    assert not (work / "exp_bad").exists()


def test_edited_view_csv_is_caught_before_training(recipe):
    work, _ = recipe
    views = work / "data" / "synth" / "2src"
    train = views / "train.csv"
    original = train.read_text()
    try:
        df = pd.read_csv(train)
        df.loc[3, "path_1"] = "wav/nosuch/file.wav"
        df.to_csv(train, index=False)
        missing = run(work, "--stage", "2", "--stop_stage", "2", "--tag", "tiny", "--exp_dir", "exp_views")
        assert missing.returncode == 1 and "train.csv row 5" in missing.stderr and "nosuch/file.wav" in missing.stderr
        df.drop(columns=["gain_db_1"]).to_csv(train, index=False)
        no_column = run(work, "--stage", "2", "--stop_stage", "2", "--tag", "tiny", "--exp_dir", "exp_views")
        assert no_column.returncode == 1 and "lacks column(s) gain_db_1" in no_column.stderr
        assert "Traceback" not in missing.stderr + no_column.stderr
    finally:
        train.write_text(original)


def test_paired_comparison_of_two_experiments(recipe):
    work, _ = recipe
    import shutil

    shutil.copytree(work / "exp" / "tiny", work / "exp" / "tiny_copy")
    refused = run(work, "--stage", "2", "--compare", "tiny", "tiny_copy")
    assert refused.returncode == 1 and "--compare runs stage 4 only" in refused.stderr
    result = run(work, "--compare", "tiny", "tiny_copy")  # stage 4 alone, without --stage 4: nothing trained
    assert result.returncode == 0, result.stderr[-2000:]
    assert "stage 2" not in result.stdout and "stages 4..4 done" in result.stdout
    out = json.loads((work / "exp" / "compare_tiny_vs_tiny_copy.json").read_text())
    assert out["n_mixtures"] == 6 and out["si_sdri"]["mean"] == 0 and out["si_sdri"]["ci95"] == [0, 0]
    assert "no difference shown" in result.stdout
    shutil.rmtree(work / "exp" / "tiny_copy")


def test_changed_config_is_refused_with_a_diff(recipe):
    work, _ = recipe
    result = run(work, "--stage", "2", "--stop_stage", "2", "--tag", "tiny", "--optim.lr", "0.01")
    assert result.returncode == 1
    assert "optim.lr: 0.001 -> 0.01" in result.stderr and "--allow_change 'optim.lr'" in result.stderr


def test_allowed_change_continues_training_and_is_recorded(recipe):
    work, _ = recipe
    exp = work / "exp" / "tiny"
    result = run(work, "--stage", "2", "--stop_stage", "2", "--tag", "tiny", "--optim.lr", "0.0003",
                 "--training.epochs", "3", "--allow_change", "optim.lr training.epochs")
    assert result.returncode == 0, result.stderr[-3000:]
    history = (exp / "history.txt").read_text().splitlines()
    assert [line.split(" ", 2)[2] for line in history] == ["optim.lr: 0.001 -> 0.0003 at epoch 2",
                                                           "training.epochs: 2 -> 3 at epoch 2"]
    frozen = yaml.safe_load((exp / "conf.yml").read_text())
    assert frozen["optim"]["lr"] == 0.0003 and frozen["training"]["epochs"] == 3
    assert json.loads((exp / "training.json").read_text())["epochs_trained"] == 3
    first, second = (pd.read_csv(exp / "logs" / f"run{n}" / "metrics.csv") for n in (1, 2))
    assert first["epoch"].max() == 1 and second["epoch"].dropna().unique().tolist() == [2]  # epoch 2 after the change
    assert len(first["lr-Adam"].dropna()) and (first["lr-Adam"].dropna() - 0.001).abs().max() < 1e-9
    assert len(second["lr-Adam"].dropna()) and (second["lr-Adam"].dropna() - 0.0003).abs().max() < 1e-9
    # a key that may not change is still refused, even when named
    refused = run(work, "--stage", "2", "--stop_stage", "2", "--tag", "tiny", "--model.hidden_size", "8",
                  "--allow_change", "model.hidden_size")
    assert refused.returncode == 1 and "model.hidden_size: 16 -> 8" in refused.stderr


def test_provenance_and_grid_report(recipe):
    work, _ = recipe
    runs = json.loads((work / "exp" / "tiny" / "provenance.json").read_text())
    assert len(runs[0]["git_commit"]) == 40 and isinstance(runs[0]["git_dirty"], bool)
    assert "run.sh --tag tiny" in runs[0]["command"] and runs[0]["seed"] == 0
    assert runs[0]["packages"]["asteroid"] == "0.7.0"
    (work / "grid.yml").write_text("cells:\n  - tiny\n  - nosuch_cell\n")
    result = run(work, "--stage", "4", "--grid", str(work / "grid.yml"))
    assert result.returncode == 0, result.stderr[-2000:]
    text = (work / "exp" / "RESULTS.md").read_text()
    assert "| tiny | done |" in text and "| nosuch_cell | not started |" in text and "1/2 done" in text
    assert (work / "exp" / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the grid runner goes through every cell (here finished: every stage skips) and reports the grid
    (work / "grid_done.yml").write_text("cells:\n  - tiny\n")
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    grid = subprocess.run([str(ROOT / "utils" / "run_grid.sh"), str(work / "grid_done.yml")], cwd=work,
                          capture_output=True, text=True, env=env, timeout=600)
    assert grid.returncode == 0, grid.stderr[-2000:]
    assert "cell 1/1: tiny" in grid.stdout and "training is finished; skipped" in grid.stdout
    # conf/tiny.yml still says lr 0.001: the experiment keeps the value changed on purpose earlier
    assert "keeping optim.lr = 0.0003" in grid.stdout and "keeping training.epochs = 3" in grid.stdout
    assert "grid_done.yml: 1/1 done" in (work / "exp" / "RESULTS.md").read_text()


def test_help_and_bad_options(tmp_path):
    helped = run(tmp_path, "--help")
    assert helped.returncode == 0 and "--stop_stage" in helped.stdout and "stage 3" not in helped.stderr
    bad = run(tmp_path, "--stgae", "2")
    assert bad.returncode == 1 and "unknown option --stgae" in bad.stderr
    unknown_tag = run(tmp_path, "--tag", "nosuch", "--stage", "2")
    assert unknown_tag.returncode == 1 and "unknown tag 'nosuch'" in unknown_tag.stderr
    assert not (tmp_path / "exp").exists()
    bad_key = run(tmp_path, "--stage", "1", "--stop_stage", "1", "--training.epoch", "3")
    assert bad_key.returncode == 1 and "unknown config key 'training.epoch'" in bad_key.stderr


def test_missing_data_dir_is_a_one_line_error(tmp_path):
    result = run(tmp_path, "--stop_stage", "0", "--data_dir", str(tmp_path / "missing"))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("ERROR: --data_dir")
    assert not (tmp_path / "data" / "missing" / "sources.csv").exists()


def test_five_source_gab_recipe_end_to_end(tmp_path):
    """Stages 0 to 3 of a 5-source config (GAB, MinLoss) on a tiny budget: 5 estimates per mixture."""
    tiny5 = dict(TINY, base=["base/gab.yml", "base/5src.yml", "base/loss_minloss.yml"],
                 data=dict(TINY["data"], n_src=5),
                 model={"channels": 4, "dilations": [[1, 1], [2, 2]], "lstm_hidden": 16, "fc_dim": 32},
                 training={"epochs": 1, "batch_size": 4, "num_workers": 0})
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "tiny5.yml").write_text(yaml.safe_dump(tiny5))
    result = run(tmp_path, "--tag", "tiny5", "--stop_stage", "3", "--nj", "1")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    views = pd.read_csv(tmp_path / "data" / "synth" / "5src" / "test.csv")
    labels = views[[f"label_{i}" for i in range(5)]]
    assert (labels.nunique(axis=1) == 5).all()
    assert (labels.apply(lambda r: list(r) == sorted(r), axis=1)).all()  # sources listed in category order
    ev = tmp_path / "exp" / "tiny5" / "eval"
    rows = pd.read_csv(ev / "metrics.csv")
    assert len(rows) == 6
    assert all(sorted(map(int, p.split())) == list(range(5)) for p in rows["permutation"])
    assert len(pd.read_csv(ev / "per_source.csv")) == 30
    example = next((ev / "examples").iterdir())
    assert len(list(example.glob("*_estimate.wav"))) == 5
    summary = json.loads((ev / "summary.json").read_text())
    assert summary["n_src"] == 5 and summary["model"] == "gab"


def test_a_second_run_on_an_owned_experiment_stops_and_grid_runners_skip_it(recipe):
    """Another process owns exp/tiny (a live pid on this host): run.sh stops at once with exit code 75 and names
    it; utils/run_grid.sh skips that cell and goes on; once the owner is gone, the cell is taken over."""
    work, _ = recipe
    owner = subprocess.Popen(["sleep", "120"])
    try:
        lock = work / "exp" / "tiny" / ".owner"
        lock.write_text(json.dumps({"host": socket.gethostname(), "pid": owner.pid, "since": "now",
                                    "command": "./run.sh --tag tiny (machine A)"}))
        busy = run(work, "--stage", "2", "--stop_stage", "3", "--tag", "tiny")
        assert busy.returncode == 75 and f"being run by pid {owner.pid}" in busy.stderr and "stage 2" not in busy.stdout
        assert busy.stderr.count("\n") == 1, busy.stderr
        grid = work / "grid.yml"
        grid.write_text("cells:\n  - tiny\n")
        env = dict(os.environ, PYTHONWARNINGS="ignore")
        runner = subprocess.run([str(ROOT / "utils" / "run_grid.sh"), str(grid)], cwd=work, capture_output=True,
                                text=True, env=env, timeout=600)
        assert runner.returncode == 0, runner.stderr[-2000:]
        assert "tiny is run by another process" in runner.stdout and "stage 4" in runner.stdout
    finally:
        owner.kill()
        owner.wait()
    again = run(work, "--stage", "3", "--stop_stage", "3", "--tag", "tiny")  # the owner is gone: taken over
    assert again.returncode == 0, again.stderr[-2000:]
    assert "which is gone" in again.stdout + again.stderr and not (work / "exp" / "tiny" / ".owner").exists()

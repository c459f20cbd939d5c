"""egs/<recipe>/RESULTS.md is generated from the experiments' records, figure by figure."""
import json

import pytest

from local.common.errors import RecipeError
from local.common.frozen import write_frozen
from local.evaluation.recipe_results import write_results


def _experiment(root, tag, model="lstm", evaluated=True):
    exp = root / tag
    (exp / "eval").mkdir(parents=True)
    cfg = {"model": {"name": model}, "data": {"dataset": "synth", "sample_rate": 8000, "mixture_seconds": 2.0}}
    write_frozen(cfg, exp / "conf.yml")
    (exp / "training.json").write_text(json.dumps({"epochs_trained": 14, "train_seconds": 612.4}))
    (exp / "provenance.json").write_text(json.dumps([{"time": "2026-12-03 07:00:00", "git_commit": "abc123",
                                                      "git_dirty": False, "python": "3.11.7", "command": "./run.sh",
                                                      "packages": {"torch": "2.11.0", "asteroid": "0.7.0",
                                                                   "pytorch-lightning": "2.6.1"},
                                                      "device": "cpu: X (2 cores)", "torch_threads": 2}]))
    if evaluated:
        (exp / "eval" / "summary.json").write_text(json.dumps(
            {"n_mixtures": 200, "si_sdri": 14.537, "si_sdri_ci95": [12.571, 16.642], "si_sdri_overlapping": 13.2,
             "n_overlapping": 198, "si_sdri_median": 15.01, "sdri": 15.5, "bound": "psm", "bound_si_sdri": 22.47,
             "share_of_bound": 0.647, "evaluated_at": "2026-12-03 07:10:00"}))
    return exp


def test_results_hold_each_records_figures_environment_and_config(tmp_path):
    _experiment(tmp_path, "lstm_2src_sisdr")
    _experiment(tmp_path, "not_evaluated", evaluated=False)
    _experiment(tmp_path, "dprnn", model="dprnn_tasnet")
    text = write_results(tmp_path, tmp_path / "RESULTS.md", "synth")
    assert (tmp_path / "RESULTS.md").read_text() == text
    assert "| 200 | 14.54 [12.57, 16.64] | 13.20 (198) | 15.01 | 15.50 | psm: 22.47 | 0.65 | 14 | 612 s |" in text
    assert "| git commit | abc123 |" in text and "| device | cpu: X (2 cores) |" in text
    assert "| evaluated | 2026-12-03 07:10:00 |" in text and "name: lstm" in text
    assert "## not_evaluated" not in text
    assert "Paper: 18.8 dB SI-SDRi on wsj0-2mix" in text and text.count("Paper:") == 1


def test_no_evaluated_experiment_is_one_clear_error(tmp_path):
    _experiment(tmp_path, "a", evaluated=False)
    with pytest.raises(RecipeError, match="no evaluated experiment"):
        write_results(tmp_path, tmp_path / "RESULTS.md", "x")
    assert not (tmp_path / "RESULTS.md").exists()

"""Stage 3: oracle masks, breakdowns, identical results for any --nj, resumable evaluation, the HTML page."""
import json
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
import torch

from local.data.dataset import ViewDataset
from local.data.sources import load_sources
from local.evaluation import evaluate as evaluation
from local.evaluation.breakdowns import overlap_seconds, per_category, per_overlap
from local.evaluation.oracle import OracleMasks
from local.training.train import train


def si_sdr(estimate, reference):
    """Scale-invariant SDR written out (Le Roux et al. 2019), independent of Asteroid's."""
    estimate, reference = estimate - estimate.mean(), reference - reference.mean()
    target = (estimate @ reference) / (reference @ reference) * reference
    return 10 * np.log10((target @ target) / ((estimate - target) @ (estimate - target)))


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    """A tiny LSTM trained for one epoch on the tiny synth data: (cfg, exp_dir, views, root)."""
    data_dir, cfg = tiny_data
    cfg = json.loads(json.dumps(cfg))
    cfg["tag"] = "tiny_eval"
    cfg["model"].update(hidden_size=16, n_layers=1)
    cfg["training"].update(epochs=1, batch_size=8, num_workers=0)
    cfg["eval"].update(n_examples=2)
    exp = tmp_path_factory.mktemp("exp") / "tiny_eval"
    _, root = load_sources(data_dir)
    train(cfg, exp, data_dir / "2src", root)
    return cfg, exp, data_dir / "2src", root


def test_oracle_masks_beat_the_input_by_a_wide_margin(tiny_data):
    data_dir, cfg = tiny_data
    _, root = load_sources(data_dir)
    dataset = ViewDataset(data_dir / "2src" / "test.csv", root)
    oracle = OracleMasks(sample_rate=dataset.sample_rate, **cfg["filterbank"])
    gains = {"ratio": [], "ibm": [], "psm": []}
    for index in range(len(dataset)):
        mixture, sources = dataset[index]
        for kind in gains:
            estimates = oracle.estimates(mixture, sources, [kind])[kind]
            for est, ref in zip(estimates.double().numpy(), sources.double().numpy()):
                gains[kind].append(si_sdr(est, ref) - si_sdr(mixture.double().numpy(), ref))
    means = {k: np.mean(v) for k, v in gains.items()}
    assert means["ratio"] > 10 and means["ibm"] > 8, means
    assert means["psm"] > max(means["ratio"], means["ibm"]), means  # the best [0, 1] mask per bin
    # With a single active source, every mask gives back the mixture (the ratio mask up to its 1e-8 floor).
    mixture, sources = dataset[0]
    alone = torch.stack([sources[0], torch.zeros_like(sources[0])])
    for kind in gains:
        estimate = oracle.estimates(sources[0], alone, [kind])[kind][0]
        assert si_sdr(estimate.double().numpy(), sources[0].double().numpy()) > 40


def test_overlap_seconds_is_how_long_every_source_sounds_at_once():
    sr = 1000  # 10 ms frames of 10 samples
    sources = np.zeros((3, 1000))
    sources[0, 0:500] = 1.0
    sources[1, 400:600] = 0.5
    sources[2, 450:900] = 0.01 * (1 + np.arange(450) % 2)  # quiet but active: within 40 dB of its own peak
    assert overlap_seconds(sources, sr) == pytest.approx(0.05)  # 450..499
    sources[2, 450:900] = 0.0
    assert overlap_seconds(sources, sr) == 0.0
    table = per_overlap(pd.DataFrame({"overlap_seconds": [0.0, 0.05, 0.3, 0.31], "si_sdri": [80.0, 5.0, 3.0, 1.0]}))
    assert table["overlap"].tolist() == ["none", "< 0.1 s", "0.25-0.5 s"]
    assert table["n_mixtures"].tolist() == [1, 1, 2] and table["si_sdri"].tolist() == [80.0, 5.0, 2.0]


def test_per_category_table_averages_its_rows():
    rows = pd.DataFrame({"label": ["dog", "rain", "dog", "bird", "rain", "dog"],
                         "si_sdri": [1.0, 5.0, 2.0, 4.0, 7.0, 3.0], "sdri": [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]})
    table = per_category(rows)
    assert table["label"].tolist() == ["dog", "bird", "rain"]  # worst SI-SDRi first
    assert table["n_sources"].tolist() == [3, 1, 2]
    assert table["si_sdri"].tolist() == pytest.approx([2.0, 4.0, 6.0])
    assert table["sdri"].tolist() == pytest.approx([7 / 3, 3.0, 2.5])


class Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links, self.title = [], ""
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        self._in_title = tag == "title"
        self.links += [value for key, value in attrs if key in ("src", "href")]

    def handle_data(self, data):
        if self._in_title:
            self.title += data


def test_evaluation_outputs_breakdowns_and_page(trained):
    cfg, exp, views, root = trained
    summary = evaluation.evaluate(cfg, exp, views, root, nj=2)
    ev = exp / "eval"
    rows, per_source = pd.read_csv(ev / "metrics.csv"), pd.read_csv(ev / "per_source.csv")
    categories = pd.read_csv(ev / "per_category.csv")
    # per-category figures are the per-source rows regrouped: counts and sums match the mixture rows
    assert categories["n_sources"].sum() == len(per_source) == 2 * len(rows)
    assert (categories["si_sdri"] * categories["n_sources"]).sum() == pytest.approx(2 * rows["si_sdri"].sum(), abs=1e-6)
    for label, group in per_source.groupby("label"):
        assert categories.set_index("label").loc[label, "sdri"] == pytest.approx(group["sdri"].mean())
    assert summary["oracle_ibm_si_sdri"] > 5 and summary["oracle_psm_si_sdri"] > summary["si_sdri"]
    assert summary["metric_seconds"] > 0 and summary["model_seconds"] > 0
    assert "pesq" not in summary  # synthetic sounds, not speech
    assert not (ev / ".partial").exists()
    # the page: every file it references exists, relative to the page
    parser = Links()
    parser.feed((ev / "index.html").read_text())
    assert parser.title.startswith("tiny_eval")
    local = [link for link in parser.links if "://" not in link]
    assert len([link for link in local if link.endswith(".wav")]) == 2 * 5
    assert "per_category.png" in local and sum(link.endswith("spectrograms.png") for link in local) == 2
    missing = [link for link in local if not (ev / link).is_file()]
    assert not missing
    for png in [ev / "per_category.png", *ev.glob("examples/*/spectrograms.png")]:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser:  # a real headless browser renders the page from disk
        dom = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
                              (ev / "index.html").as_uri()], capture_output=True, text=True, timeout=120).stdout
        assert "Per category" in dom and dom.count("<audio") == 10


def test_nj_2_gives_the_same_rows_as_nj_1(trained, tmp_path):
    cfg, exp, views, root = trained
    evaluation.evaluate(cfg, exp, views, root, nj=1, out_dir=tmp_path / "nj1")
    evaluation.evaluate(cfg, exp, views, root, nj=2, out_dir=tmp_path / "nj2")
    for name in ("metrics.csv", "per_source.csv", "per_category.csv"):
        assert (tmp_path / "nj1" / name).read_bytes() == (tmp_path / "nj2" / name).read_bytes(), name


def test_interrupted_evaluation_continues_where_it_stopped(trained, tmp_path, monkeypatch, capsys):
    cfg, exp, views, root = trained
    monkeypatch.setattr(evaluation, "CHUNK", 2)
    real, calls = evaluation.best_permutation, []

    def dies_in_the_third_chunk(estimates, sources):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(estimates, sources)

    monkeypatch.setattr(evaluation, "best_permutation", dies_in_the_third_chunk)
    with pytest.raises(KeyboardInterrupt):
        evaluation.evaluate(cfg, exp, views, root, nj=1, out_dir=tmp_path / "ev")
    assert not (tmp_path / "ev" / "summary.json").exists() and not (tmp_path / "ev" / "metrics.csv").exists()
    assert len(list((tmp_path / "ev" / ".partial").glob("chunk*.json"))) == 2
    monkeypatch.setattr(evaluation, "best_permutation", real)
    capsys.readouterr()
    evaluation.evaluate(cfg, exp, views, root, nj=1, out_dir=tmp_path / "ev")
    assert "the first 4 mixtures came from" in capsys.readouterr().out
    evaluation.evaluate(cfg, exp, views, root, nj=1, out_dir=tmp_path / "clean")
    assert (tmp_path / "ev" / "metrics.csv").read_bytes() == (tmp_path / "clean" / "metrics.csv").read_bytes()


def test_report_plot_survives_an_interval_rounded_past_its_mean(tmp_path):
    """The interval column is printed to the hundredth; a mean of 5.004 with '[5.01, 6.00]' must still plot."""
    import pandas as pd

    from local.evaluation.report import plot

    df = pd.DataFrame({"tag": ["a", "b", "c"], "si_sdri": [5.004, 3.0, 7.0],
                       "si_sdri_ci95": ["[5.01, 6.00]", None, "[6.50, 6.99]"], "bound_si_sdri": [20.0, 18.0, None]})
    plot(df, tmp_path / "report.png")
    assert (tmp_path / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_training_log_splices_a_resumed_run_at_its_first_step(tmp_path):
    """A run killed after step 30 and resumed from step 20: the curves show run1's steps before 20, then run2's."""
    from local.evaluation.curves import curves_figure, training_log

    for run, steps in (("run1", range(0, 31, 10)), ("run2", range(20, 51, 10))):
        (tmp_path / "logs" / run).mkdir(parents=True)
        pd.DataFrame({"step": list(steps), "loss_step": [float(run == "run2")] * len(steps),
                      "lr-Adam": [0.001] * len(steps)}).to_csv(tmp_path / "logs" / run / "metrics.csv", index=False)
    log = training_log(tmp_path)
    assert log["step"].tolist() == [0, 10, 20, 30, 40, 50]
    assert log["run"].tolist() == ["run1", "run1", "run2", "run2", "run2", "run2"]
    assert log["lr"].tolist() == [0.001] * 6
    assert curves_figure(tmp_path, tmp_path / "c.png", "t").read_bytes()[:4] == b"\x89PNG"
    assert (training_log(tmp_path / "nothing") is None
            and curves_figure(tmp_path / "nothing", tmp_path / "n.png", "t") is None)
    (tmp_path / "logs" / "run3").mkdir()
    (tmp_path / "logs" / "run3" / "metrics.csv").write_text("")  # a run killed before its logger wrote a line
    assert training_log(tmp_path)["step"].tolist() == [0, 10, 20, 30, 40, 50]


def test_a_sweep_trials_curves_link_points_into_its_cell(tmp_path):
    """The report is written in the experiments folder: a sweep's best trial lives in <cell>/trials/<n>/."""
    from local.common.config import load_config
    from local.common.frozen import write_frozen
    from local.evaluation.report import experiment_row

    trial = tmp_path / "cell" / "trials" / "003"
    (trial / "eval").mkdir(parents=True)
    write_frozen(load_config("lstm_2src"), trial / "conf.yml")
    (trial / "eval" / "curves.png").write_bytes(b"\x89PNG")
    assert experiment_row(trial, tmp_path)["curves"] == "[figure](cell/trials/003/eval/curves.png)"

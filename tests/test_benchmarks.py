"""The benchmark matrix merges budget runs without moving a figure: each number lands in its own dataset, family,
dynamic-mixing row and budget column."""
import json

import pytest

from local.benchmarks.budget_matrix import family, main


def row(tag, dynamic, minutes, mean, low, high, overlapping=None, median=None):
    r = {"tag": tag, "dynamic_mixing": dynamic, "minutes": minutes, "si_sdri": mean, "si_sdri_ci95": [low, high]}
    if overlapping is not None:
        r.update(si_sdri_overlapping=overlapping, si_sdri_median=median)
    return r


def test_every_figure_lands_in_its_cell(tmp_path):
    synth = tmp_path / "synth.json"
    synth.write_text(json.dumps({"rows": [
        row("lstm_2src_sisdr", False, 2, 5.5, 5.0, 6.0, 5.5, 5.25),
        row("lstm_2src_sisdr", False, 10, 14.25, 13.0, 15.5, 14.25, 14.5),
        row("lstm_2src_sisdr", True, 2, 6.5, 6.0, 7.0, 6.5, 6.75),
        row("conv_tasnet_2src", False, 2, 1.125, 0.5, 1.75, 1.125, 1.0)]}))
    real = tmp_path / "real.json"
    real.write_text(json.dumps({"rows": [row("vtf_2src", False, 5, 3.0, 2.0, 4.0)]}))  # an older file: no median
    later = tmp_path / "later.json"  # measured again: wins over synth.json's row
    later.write_text(json.dumps({"rows": [row("lstm_2src_sisdr", False, 2, 7.5, 7.0, 8.0, 7.25, 7.75)]}))
    main(["--out", str(tmp_path / "m"), f"synth={synth}", f"real={real}", f"synth={later}"])
    lines = (tmp_path / "m.md").read_text().splitlines()
    assert lines[0] == "| dataset | family (tag) | dynamic mixing | 2 min | 5 min | 10 min |"
    assert lines[2:] == [
        "| real | vtf (vtf_2src) | no | - | 3.00 [2.00, 4.00] / - / - | - |",
        "| synth | conv_tasnet (conv_tasnet_2src) | no | 1.12 [0.50, 1.75] / 1.12 / 1.00 | - | - |",
        "| synth | lstm (lstm_2src_sisdr) | no | 7.50 [7.00, 8.00] / 7.25 / 7.75 | - | "
        "14.25 [13.00, 15.50] / 14.25 / 14.50 |",
        "| synth | lstm (lstm_2src_sisdr) | yes | 6.50 [6.00, 7.00] / 6.50 / 6.75 | - | - |",
    ]
    rows = json.loads((tmp_path / "m.json").read_text())["rows"]
    assert len(rows) == 5 and {r["dataset"] for r in rows} == {"synth", "real"}
    assert (tmp_path / "m.png").stat().st_size > 0


def test_a_base_matrix_keeps_its_rows_and_new_runs_win_a_clash(tmp_path):
    """--base: the earlier matrix's rows stay in their datasets; a file given wins its cell; a base without a
    dataset key is refused in one line naming the file."""
    synth = tmp_path / "synth.json"
    synth.write_text(json.dumps({"rows": [row("lstm_2src_sisdr", False, 2, 5.5, 5.0, 6.0, 5.5, 5.25),
                                          row("vtf_2src", False, 2, 4.0, 3.0, 5.0, 4.0, 4.0)]}))
    main(["--out", str(tmp_path / "first"), f"synth={synth}"])
    later = tmp_path / "later.json"
    later.write_text(json.dumps({"rows": [row("lstm_2src_sisdr", False, 2, 7.5, 7.0, 8.0, 7.25, 7.75),
                                          row("dpcl_blstm_2spk_w", False, 15, -1.0, -1.5, -0.5, -1.0, -1.0)]}))
    main(["--out", str(tmp_path / "second"), "--base", str(tmp_path / "first.json"), f"synth={later}",
          f"speech={later}"])
    lines = (tmp_path / "second.md").read_text().splitlines()
    assert lines[2:] == [
        "| speech | dpcl_blstm (dpcl_blstm_2spk_w) | no | - | -1.00 [-1.50, -0.50] / -1.00 / -1.00 |",
        "| speech | lstm (lstm_2src_sisdr) | no | 7.50 [7.00, 8.00] / 7.25 / 7.75 | - |",
        "| synth | dpcl_blstm (dpcl_blstm_2spk_w) | no | - | -1.00 [-1.50, -0.50] / -1.00 / -1.00 |",
        "| synth | lstm (lstm_2src_sisdr) | no | 7.50 [7.00, 8.00] / 7.25 / 7.75 | - |",
        "| synth | vtf (vtf_2src) | no | 4.00 [3.00, 5.00] / 4.00 / 4.00 | - |",
    ]
    with pytest.raises(SystemExit, match="a row lacks 'dataset'"):
        main(["--out", str(tmp_path / "third"), "--base", str(synth)])


def gain(tag, minutes, mean, low, high, o_mean, o_low, o_high):
    return {"tag": tag, "minutes": minutes, "all": {"mean": mean, "ci95": [low, high], "n": 200},
            "overlapping": {"mean": o_mean, "ci95": [o_low, o_high], "n": 170}}


def test_dynamic_mixing_gains_land_in_their_cells(tmp_path):
    """Each run's paired gains land under their dataset, family and budget; a later file wins a clash, and a matrix
    without any gain has no gain table."""
    first = tmp_path / "first.json"
    first.write_text(json.dumps({"rows": [row("gab_2src", False, 2, 5.0, 4.0, 6.0, 5.0, 4.5)], "dynamic_mixing_gain": [
        gain("gab_2src", 2, 0.25, -0.5, 1.0, 0.5, -0.25, 1.25),
        gain("gab_2src", 10, -1.5, -2.0, -1.0, -1.75, -2.5, -1.0)]}))
    later = tmp_path / "later.json"
    later.write_text(json.dumps({"rows": [row("vtf_2src", True, 5, 3.0, 2.0, 4.0)], "dynamic_mixing_gain": [
        gain("gab_2src", 10, 2.0, 1.5, 2.5, 3.0, 2.25, 3.75)]}))
    real = tmp_path / "real.json"
    real.write_text(json.dumps({"rows": [row("drnn_2src", False, 5, 1.0, 0.5, 1.5)], "dynamic_mixing_gain": [
        gain("drnn_2src", 5, -0.125, -0.5, 0.25, 0.0, -0.75, 0.5)]}))
    main(["--out", str(tmp_path / "m"), f"synth={first}", f"real={real}", f"synth={later}"])
    text = (tmp_path / "m.md").read_text()
    table = text[text.index("Dynamic mixing - fixed"):].splitlines()
    assert table[2:] == [
        "| dataset | family (tag) | 2 min | 5 min | 10 min |", "|---|---|---|---|---|",
        "| real | drnn (drnn_2src) | - | -0.12 [-0.50, +0.25] / +0.00 [-0.75, +0.50] | - |",
        "| synth | gab (gab_2src) | +0.25 [-0.50, +1.00] / +0.50 [-0.25, +1.25] | - | "
        "+2.00 [+1.50, +2.50] / +3.00 [+2.25, +3.75] |"]
    gains = json.loads((tmp_path / "m.json").read_text())["dynamic_mixing_gain"]
    assert sorted((g["dataset"], g["tag"], g["minutes"], g["all"]["mean"]) for g in gains) == [
        ("real", "drnn_2src", 5, -0.125), ("synth", "gab_2src", 2, 0.25), ("synth", "gab_2src", 10, 2.0)]
    first.write_text(json.dumps({"rows": [row("gab_2src", False, 2, 5.0, 4.0, 6.0)]}))
    main(["--out", str(tmp_path / "plain"), f"synth={first}"])
    assert "Dynamic mixing" not in (tmp_path / "plain.md").read_text()


def test_family_names():
    assert [family(t) for t in ("lstm_2src_sisdr", "conv_tasnet_3src", "stt_5src_minloss", "upit_lstm_2spk")] == \
        ["lstm", "conv_tasnet", "stt", "upit_lstm"]


@pytest.mark.parametrize("source, message", [("synth", "is not DATASET=PATH/budget.json"),
                                             ("synth=/nonexistent/budget.json", "cannot read /nonexistent/budget.json"),
                                             ("synth=BAD_ROW", "a row lacks 'minutes'"),
                                             ("synth=BAD_GAIN", "a dynamic_mixing_gain entry lacks 'all'")])
def test_bad_sources_are_one_line(tmp_path, capsys, source, message):
    good = {"tag": "t_2src", "dynamic_mixing": False, "minutes": 2, "si_sdri": 1.0, "si_sdri_ci95": [0.0, 2.0]}
    files = {"BAD_ROW": {"rows": [{k: v for k, v in good.items() if k != "minutes"}]},
             "BAD_GAIN": {"rows": [good], "dynamic_mixing_gain": [{"tag": "t_2src", "minutes": 2}]}}
    if source.partition("=")[2] in files:
        inputs = tmp_path.parent / f"{tmp_path.name}_in.json"  # outside tmp_path, which must stay empty
        inputs.write_text(json.dumps(files[source.partition("=")[2]]))
        source = f"synth={inputs}"
    with pytest.raises(SystemExit, match=message):
        main(["--out", str(tmp_path / "m"), source])
    assert not list(tmp_path.iterdir())


def test_dynamic_mixing_gain_is_paired_on_the_same_mixtures(tmp_path):
    """The gain is the mean of per-mixture differences matched by mixture_id (rows in another order), over all
    mixtures and over those whose sources overlap."""
    import numpy as np
    import pandas as pd

    from local.benchmarks.budget import dynamic_mixing_gain

    ids = [f"test_{i:06d}" for i in range(6)]
    fixed = pd.DataFrame({"mixture_id": ids, "si_sdri": [1.0, 2.0, 3.0, 80.0, 5.0, 6.0],
                          "overlap_seconds": [0.5, 0.3, 1.0, 0.0, 2.0, 0.1]})
    dynamic = pd.DataFrame({"mixture_id": ids[::-1], "si_sdri": [7.0, 5.5, 90.0, 3.5, 2.0, 1.5],
                            "overlap_seconds": [1.0, 1.0, 0.0, 0.4, 0.2, 0.2]})
    for d, frame in ((0, fixed), (1, dynamic)):
        (tmp_path / f"at_5min_dm{d}" / "t" / "eval").mkdir(parents=True)
        frame.to_csv(tmp_path / f"at_5min_dm{d}" / "t" / "eval" / "metrics.csv", index=False)
    gain = dynamic_mixing_gain(tmp_path, "t", 5)
    by_id = dict(zip(dynamic["mixture_id"], dynamic["si_sdri"]))
    diffs = np.array([by_id[i] - f for i, f in zip(ids, fixed["si_sdri"])])  # 0.5, 0.0, 0.5, 10, 0.5, 1.0
    assert gain["all"]["mean"] == pytest.approx(diffs.mean()) and gain["all"]["n"] == 6
    assert gain["overlapping"]["mean"] == pytest.approx(np.delete(diffs, 3).mean()) and gain["overlapping"]["n"] == 5
    low, high = gain["overlapping"]["ci95"]
    assert 0.0 <= low <= 0.5 <= high <= 1.0


def test_tags_are_paired_with_every_earlier_tag_on_the_same_mixtures(tmp_path):
    """paired_between_tags: b - a, c - a and c - b after each budget, matched by mixture_id (rows in another order),
    the mean equal to the per-mixture differences computed here."""
    import numpy as np
    import pandas as pd

    from local.benchmarks.budget import paired_between_tags

    ids = [f"test_{i:06d}" for i in range(5)]
    scores = {"a": [1.0, 2.0, 3.0, 4.0, 5.0], "b": [2.0, 2.0, 5.0, 3.0, 9.0], "c": [0.0, 1.0, 1.0, 1.0, 2.0]}
    for tag, values in scores.items():
        (tmp_path / "at_2min_dm0" / tag / "eval").mkdir(parents=True)
        order = [4, 2, 0, 1, 3] if tag == "b" else range(5)
        pd.DataFrame({"mixture_id": [ids[i] for i in order], "si_sdri": [values[i] for i in order]}).to_csv(
            tmp_path / "at_2min_dm0" / tag / "eval" / "metrics.csv", index=False)
    paired = paired_between_tags(tmp_path, ["a", "b", "c"], [2], [False])
    assert [(d["tag"], d["minus"]) for d in paired] == [("b", "a"), ("c", "a"), ("c", "b")]
    for d in paired:
        expected = np.array(scores[d["tag"]]) - np.array(scores[d["minus"]])
        assert d["mean"] == pytest.approx(expected.mean()) and d["n"] == 5 and d["minutes"] == 2
        assert d["ci95"][0] <= d["mean"] <= d["ci95"][1]


def test_dynamic_mixing_gain_of_a_query_model_pairs_each_query_not_each_mixture(tmp_path):
    """Query models' metrics.csv has a row per (mixture, query): the gain pairs those, and a negative query's empty
    si_sdri counts in neither mean."""
    import numpy as np
    import pandas as pd

    from local.benchmarks.budget import dynamic_mixing_gain

    fixed = pd.DataFrame({"mixture_id": ["m0", "m0", "m0", "m1", "m1"], "query": ["a", "b", "c", "a", "b"],
                          "si_sdri": [1.0, 2.0, np.nan, 4.0, 5.0]})
    dynamic = pd.DataFrame({"mixture_id": ["m1", "m1", "m0", "m0", "m0"], "query": ["b", "a", "c", "b", "a"],
                            "si_sdri": [6.0, 4.5, np.nan, 2.5, 3.0]})
    for d, frame in ((0, fixed), (1, dynamic)):
        (tmp_path / f"at_5min_dm{d}" / "t" / "eval").mkdir(parents=True)
        frame.to_csv(tmp_path / f"at_5min_dm{d}" / "t" / "eval" / "metrics.csv", index=False)
    gain = dynamic_mixing_gain(tmp_path, "t", 5)
    assert gain["all"]["n"] == 4 and gain["all"]["mean"] == pytest.approx((2.0 + 0.5 + 0.5 + 1.0) / 4)


@pytest.mark.parametrize("args, message", [(["--recipe", "nosuch.sh"], "no recipe .*nosuch.sh"),
                                           (["--minutes", "2", "-1"], "--minutes must be positive")])
def test_budget_refuses_a_missing_recipe_and_non_positive_minutes(tmp_path, args, message):
    from local.benchmarks.budget import main as budget_main

    with pytest.raises(SystemExit, match=message):
        budget_main([*args, "--work", str(tmp_path / "work")])
    assert not (tmp_path / "work").exists()


def test_budget_rows_say_how_far_training_got(tmp_path):
    """Mixtures seen = optimizer steps x the experiment's batch size, read from the snapshot stage 2 wrote; a
    snapshot from before stage 2 recorded it gives None, not a made-up figure."""
    import torch
    import yaml

    from local.benchmarks.budget import training_progress

    (tmp_path / "conf.yml").write_text(yaml.safe_dump({"training": {"batch_size": 12}}))
    torch.save({"infos": {"training_progress": {"minutes": 2.01, "epoch": 3, "optimizer_steps": 250}}},
               tmp_path / "new.pth")
    torch.save({"infos": {}}, tmp_path / "old.pth")
    assert training_progress(tmp_path / "new.pth", tmp_path / "conf.yml") == \
        {"epoch": 3, "optimizer_steps": 250, "mixtures_seen": 3000}
    assert training_progress(tmp_path / "old.pth", tmp_path / "conf.yml") == \
        {"epoch": None, "optimizer_steps": None, "mixtures_seen": None}


def test_small_data_protocols_keep_the_held_out_package_out_and_cap_training():
    """small30 caps each category's training files at 30 (val/test untouched); lopo tests on the held-out package
    only, on the categories both sides have, and trains on at most 30 files of the others; the pretraining rows
    hold nothing of the held-out package and give every category files in every split."""
    import pandas as pd

    from local.benchmarks.small_data import leave_one_package_out, pretraining_rows, small30

    rows = []
    for package, labels in (("a", ["kick", "snare", "speech"]), ("b", ["kick", "snare"]), ("held", ["kick", "bass"])):
        for label in labels:
            for k in range(50):
                split = "train" if k < 40 or package == "b" else ("val" if k < 45 else "test")
                split = "test" if package == "held" and k >= 40 else split
                rows.append({"path": f"{package}/{label}/{k:02d}.wav", "label": label, "package": package,
                             "split": split})
    listing = pd.DataFrame(rows)
    capped = small30(listing)
    assert (capped[capped["split"] == "train"].groupby("label").size() == 30).all()
    assert len(capped[capped["split"] != "train"]) == len(listing[listing["split"] != "train"])
    lopo = leave_one_package_out(listing, "held")
    assert set(lopo.loc[lopo["split"] == "test", "package"]) == {"held"}
    assert set(lopo.loc[lopo["split"] != "test", "package"]) == {"a", "b"}
    assert set(lopo["label"]) == {"kick"}  # bass only in the held-out package, snare and speech not in it
    assert (lopo[lopo["split"] == "train"].groupby("label").size() <= 30).all()
    assert lopo.groupby("split").size().to_dict() == {"test": 50, "train": 30, "val": 15}  # all held kick; 15 % of 100
    pre = pretraining_rows(listing, "held")
    assert "held" not in set(pre["package"]) and len(pre) == 250
    assert pre.groupby("label")["split"].nunique().eq(3).all()  # snare of b had only training files
    assert pre.groupby(["label", "split"]).size()[("kick", "test")] == 15
    assert leave_one_package_out(listing, "held").equals(lopo) and pretraining_rows(listing, "held").equals(pre)


def test_screen_reads_the_validation_curve_of_the_last_run_and_reuses_finished_variants(tmp_path):
    """The screen's curve is the val_loss rows of the last run's metrics.csv (run10 after run9, not run2), with
    their epochs and steps; a variant trained for the asked epochs is read, not run again, and one trained for other
    epochs is refused rather than overwritten; clashing variant names are refused before anything is written."""
    import pandas as pd

    from local.benchmarks.screen import main as screen_main
    from local.benchmarks.screen import validation_curve

    exp = tmp_path / "work" / "a" / "t"
    for run, losses in (("run9", [-1.0, -2.0]), ("run10", [-3.0, -4.5]), ("run2", [0.0, 0.0])):
        (exp / "logs" / run).mkdir(parents=True)
        pd.DataFrame({"epoch": [0, None, 1], "step": [9, 10, 19], "val_loss": [losses[0], None, losses[1]],
                      "loss_step": [None, -1.0, None]}).to_csv(exp / "logs" / run / "metrics.csv", index=False)
    assert validation_curve(exp) == [(0, 9, -3.0), (1, 19, -4.5)]
    (exp / "training.json").write_text(json.dumps({"epochs_trained": 2, "n_parameters": 7, "train_seconds": 12.5}))
    screen_main(["--tag", "t", "--epochs", "2", "--work", str(tmp_path / "work"), "--variant", "a", ""])
    result = json.loads((tmp_path / "work" / "screen.json").read_text())
    assert result["rows"][0]["val_loss"][1] == {"epoch": 1, "step": 19, "val_loss": -4.5}
    assert result["rows"][0]["train_seconds"] == 12.5
    with pytest.raises(SystemExit, match="holds an unfinished or different run"):
        screen_main(["--tag", "t", "--epochs", "3", "--work", str(tmp_path / "work"), "--variant", "a", ""])
    with pytest.raises(SystemExit, match="variant names must be distinct"):
        screen_main(["--tag", "t", "--work", str(tmp_path / "w2"), "--variant", "a", "", "--variant", "a", "x"])
    with pytest.raises(SystemExit, match="the options of variant b do not parse"):
        screen_main(["--tag", "t", "--work", str(tmp_path / "w2"), "--variant", "b", "--optim.lr '0.1"])
    assert not (tmp_path / "w2").exists()

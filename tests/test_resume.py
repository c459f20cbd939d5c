"""Exact resume after kill -9, atomic checkpoints, resumable sharded sampling, and 2-process CPU DDP."""
import json
import os
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from local.benchmarks.resume import kill_and_resume, run_stage2
from local.models import load_model
from local.training import resumable
from local.training.resumable import AtomicCheckpointIO, EpochBatchSampler

# 64 training mixtures in batches of 4: 16 steps per epoch; dropout so that the RNG state matters.
TINY = {
    "base": ["base/lstm.yml"],
    "data": {"n_src": 2, "mixture_seconds": 0.5, "n_mixtures": {"train": 64, "val": 8, "test": 6},
             "file_selection_range": {"train": [0, 4], "val": [4, 5], "test": [5, 6]},
             "synth": {"clips_per_category": 6, "min_seconds": 1.0, "max_seconds": 1.5}},
    "model": {"hidden_size": 16, "n_layers": 2, "dropout": 0.2},
    # a high learning rate and no patience, so that ReduceLROnPlateau acts within the run
    "optim": {"lr": 0.03, "lr_patience": 0},
    "training": {"epochs": 3, "batch_size": 4, "num_workers": 0, "checkpoint_every_n_steps": 3,
                 "progress_every_n_steps": 1, "val_check_interval": 0.5},
}


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    work = tmp_path_factory.mktemp("resume")
    (work / "conf").mkdir()
    (work / "conf" / "tiny.yml").write_text(yaml.safe_dump(TINY))
    run_stage2(work, "tiny", work / "exp", stage=0, stop_stage=1, log=work / "prepare.log")
    return work


def batches_of_all_ranks(monkeypatch, sampler, world, resume=None):
    out = []
    for rank in range(world):
        monkeypatch.setattr(resumable, "rank_and_world_size", lambda rank=rank: (rank, world))
        if resume:
            sampler.resume(*resume)
        out.append(list(sampler))
    return out


def test_sampler_shards_resume_at_the_consumed_prefix_with_any_world_size(monkeypatch):
    sampler = EpochBatchSampler(50, batch_size=4, seed=3)
    sampler.set_epoch(2)
    order = sampler.order(2).tolist()
    assert sorted(order) == list(range(50)) and order != sampler.order(1).tolist()
    ranks = batches_of_all_ranks(monkeypatch, sampler, world=2)
    assert [len(b) for b in ranks] == [6, 6]  # 25 items per rank -> 6 full batches, the rest dropped
    # After k steps the ranks consumed exactly the first k * batch * world items of the permutation.
    k = 2
    consumed = sorted(i for rank in ranks for batch in rank[:k] for i in batch)
    assert consumed == sorted(order[: k * 4 * 2])
    resumed = batches_of_all_ranks(monkeypatch, sampler, world=2, resume=(2, k * 4 * 2))
    assert resumed == [rank[k:] for rank in ranks]
    # Resuming on 1 process instead sees each remaining item of the epoch at most once, none consumed.
    (single,) = batches_of_all_ranks(monkeypatch, sampler, world=1, resume=(2, k * 4 * 2))
    rest = [i for batch in single for i in batch]
    assert len(set(rest)) == len(rest) and not set(rest) & set(consumed) and len(rest) == (50 - 16) // 4 * 4
    # A checkpoint at the end of an epoch resumes at the start of the next one.
    (after_end,) = batches_of_all_ranks(monkeypatch, sampler, world=1, resume=(2, 48))
    assert after_end[0] == sampler.order(3).tolist()[:4] and sampler.epoch == 3


def test_evaluation_order_covers_every_item_on_every_rank_count(monkeypatch):
    sampler = EpochBatchSampler(7, batch_size=2, shuffle=False, drop_last=False)
    (one,) = batches_of_all_ranks(monkeypatch, sampler, world=1)
    assert one == [[0, 1], [2, 3], [4, 5], [6]]
    two = batches_of_all_ranks(monkeypatch, sampler, world=2)
    assert [len(b) for b in two] == [2, 2] and {i for r in two for b in r for i in b} == set(range(7))


def test_epoch_in_index_hands_out_one_code_per_item_and_epoch(monkeypatch):
    monkeypatch.setattr(resumable, "rank_and_world_size", lambda: (0, 1))
    sampler = EpochBatchSampler(10, 5, seed=1, epoch_in_index=True)
    plain = EpochBatchSampler(10, 5, seed=1)
    for epoch in (0, 3):
        sampler.set_epoch(epoch)
        plain.set_epoch(epoch)
        codes = [i for batch in sampler for i in batch]
        assert codes == [epoch * 10 + i for batch in plain for i in batch]


def test_batch_size_or_process_count_change_only_at_an_epoch_end():
    def checkpoint(items_done, world=1, batch=4):
        return {"callbacks": {"ResumeState": {"epoch": 1, "items_done": items_done, "world_size": world,
                                              "batch_size": batch}}}

    assert not resumable.ResumeState.mid_epoch(checkpoint(0), 50)
    assert resumable.ResumeState.mid_epoch(checkpoint(8), 50)
    assert not resumable.ResumeState.mid_epoch(checkpoint(48), 50)  # 2 items left: no full batch, the epoch is over
    assert resumable.ResumeState.mid_epoch(checkpoint(32, world=2), 50)  # 9 items per rank left: 2 more batches
    assert not resumable.ResumeState.mid_epoch(checkpoint(48, world=2), 50)


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"global_step": 1}, path)

    def dies_half_way(obj, f):
        Path(f).write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"global_step": 2}, path)
    assert torch.load(path, weights_only=True) == {"global_step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_kill_9_mid_epoch_then_resume_reaches_the_uninterrupted_weights(work):
    # Step 20 is batch 4 of epoch 1 (of 5), between the step checkpoints at 18 and 21 and a validation at 24;
    # the plateau scheduler lowers the learning rate in the last epochs.
    figures = kill_and_resume(work, "tiny", work / "exp_kill", kill_after_step=20, overrides=["training.epochs=5"])
    print(json.dumps(figures))
    assert figures["killed_returncode"] == -9, "the run finished before it was killed: nothing was tested"
    assert figures["resumed"] and 16 < figures["resumed_from_step"] < 32
    assert 0 <= figures["steps_lost"] <= TINY["training"]["checkpoint_every_n_steps"]
    assert figures["final_steps"] == [80, 80]
    assert figures["final_learning_rates"][0] == figures["final_learning_rates"][1] < 0.03  # the scheduler acted
    assert figures["max_abs_weight_difference"] <= 1e-6
    # the training time counts the killed run up to its last checkpoint, not only the resumed run
    resumed = figures["resumed_training"]
    assert resumed["train_seconds_earlier_runs"] > 0
    assert resumed["train_seconds"] >= resumed["train_seconds_this_run"] + resumed["train_seconds_earlier_runs"] - 0.15


def test_dynamic_mixing_resumes_exactly_after_kill_9(work):
    """New training mixtures every epoch (drawn per item from its epoch and index), their sources sped up or
    slowed and equalised (data.augmentation), killed in epoch 1, where the mixtures are no longer the stage-1
    views: the resumed run still reaches the uninterrupted weights."""
    figures = kill_and_resume(work, "tiny", work / "exp_kill_dm", kill_after_step=20,
                              overrides=["training.epochs=2", "data.dynamic_mixing=true",
                                         "data.augmentation.speed=0.1", "data.augmentation.eq_db=6"])
    print(json.dumps(figures))
    assert figures["killed_returncode"] == -9 and figures["resumed"] and 16 < figures["resumed_from_step"] <= 20
    assert figures["final_steps"] == [32, 32]
    assert figures["max_abs_weight_difference"] <= 1e-6


def cosine_lr(lr, epoch, epochs):
    """The cosine schedule written out independently: lr * (1 + cos(pi * epoch / epochs)) / 2."""
    import math
    return lr * (1 + math.cos(math.pi * epoch / epochs)) / 2


def epoch_learning_rates(exp, run):
    import pandas as pd
    return pd.read_csv(exp / "logs" / f"run{run}" / "metrics.csv")["lr-Adam"].dropna().tolist()


def test_cosine_schedule_follows_its_formula_resumes_exactly_and_stretches_to_new_epochs(work):
    """optim.scheduler: cosine anneals per epoch from lr to 0 over training.epochs; killed in epoch 1 and resumed,
    it reaches the uninterrupted weights; given 2 more epochs (--allow_change), it anneals to the new end."""
    overrides = ["training.epochs=3", "optim.scheduler=cosine"]
    figures = kill_and_resume(work, "tiny", work / "exp_cos", kill_after_step=20, overrides=overrides)
    print(json.dumps(figures))
    assert figures["killed_returncode"] == -9 and figures["resumed"] and 16 < figures["resumed_from_step"] <= 20
    assert figures["final_steps"] == [48, 48] and figures["max_abs_weight_difference"] <= 1e-6
    # killed just after epoch 0's end: resumed from the epoch-end checkpoint, whose scheduler step is still owed
    # (Lightning takes it for cosine; taking it twice gave epoch 1 the rate of epoch 2)
    at_end = kill_and_resume(work, "tiny", work / "exp_cos_end", kill_after_step=17, overrides=overrides)
    print(json.dumps(at_end))
    assert at_end["resumed_from_step"] == 16 and at_end["max_abs_weight_difference"] <= 1e-6
    assert figures["final_learning_rates"] == pytest.approx([0.0, 0.0], abs=1e-12)  # cos(pi) after the last epoch
    exp = work / "exp_cos" / "uninterrupted" / "tiny"
    assert epoch_learning_rates(exp, 1) == pytest.approx([cosine_lr(0.03, e, 3) for e in range(3)], rel=1e-6)
    run_stage2(work, "tiny", work / "exp_cos" / "uninterrupted",
               ["training.epochs=5", "optim.scheduler=cosine", "allow_change=training.epochs"])
    assert epoch_learning_rates(exp, 2) == pytest.approx([cosine_lr(0.03, e, 5) for e in (3, 4)], rel=1e-6)


def test_two_process_cpu_ddp_writes_one_consistent_experiment(work):
    run_stage2(work, "tiny", work / "exp_ddp", ["training.accelerator=cpu", "training.devices=2",
                                                "training.checkpoint_every_n_steps=null"], log=work / "ddp.log")
    exp = work / "exp_ddp" / "tiny"
    log = (work / "ddp.log").read_text()
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in log and log.count("stage 2: training lstm") == 1
    summary = json.loads((exp / "training.json").read_text())
    # 64 mixtures over 2 ranks in batches of 4: 8 steps per epoch, each step seeing 8 mixtures.
    assert summary["world_size"] == 2 and summary["global_step"] == 3 * 8 and summary["epochs_trained"] == 3
    assert len(json.loads((exp / "provenance.json").read_text())) == 1
    assert sorted(p.name for p in (exp / "logs").iterdir()) == ["run1"]
    assert yaml.safe_load((exp / "conf.yml").read_text())["training"]["devices"] == 2
    model = load_model(exp / "best_model.pth")
    assert model(torch.zeros(1, 4000)).shape == (1, 2, 4000)
    assert not [p for p in exp.rglob(".*") if p.is_file()], "temporary files left behind"
    assert not os.path.exists(exp / "history.txt")


def test_snapshots_are_taken_at_their_training_minutes_and_kept_across_a_resume(tmp_path, tiny_cfg):
    """SaveSnapshots writes the model once the experiment's training time (earlier runs included) passes each
    mark, as a package that loads and holds the weights of that moment; a resumed run keeps earlier snapshots."""
    from types import SimpleNamespace

    from local.models import build_model, load_model
    from local.training.train import SaveSnapshots

    clock = {"seconds": 0.0}
    state = SimpleNamespace(train_seconds=lambda: clock["seconds"])
    model = build_model(tiny_cfg)
    module, trainer = SimpleNamespace(model=model), SimpleNamespace(is_global_zero=True, current_epoch=0, global_step=0)
    snapshots = SaveSnapshots([5, 2], tmp_path, state)
    first = next(model.parameters())
    for step, (seconds, value) in enumerate(((60, 1.0), (130, 2.0), (200, 3.0), (301, 4.0), (400, 5.0))):
        clock["seconds"] = seconds
        trainer.global_step, trainer.current_epoch = step + 1, step // 2
        with torch.no_grad():
            first.fill_(value)
        snapshots.on_train_batch_end(trainer, module, None, None, 0)
    saved = sorted(p.name for p in (tmp_path / "snapshots").iterdir())
    assert saved == ["minutes_2.pth", "minutes_5.pth"]
    # the weights of the first batch past each mark: 2.0 at 130 s, 4.0 at 301 s
    assert float(next(load_model(tmp_path / "snapshots" / "minutes_2.pth").parameters()).detach().flatten()[0]) == 2.0
    assert float(next(load_model(tmp_path / "snapshots" / "minutes_5.pth").parameters()).detach().flatten()[0]) == 4.0
    # each package says how far training had got: 130 s = step 2 of epoch 0, 301 s = step 4 of epoch 1
    progress = {m: torch.load(tmp_path / "snapshots" / f"minutes_{m}.pth",
                              weights_only=True)["infos"]["training_progress"]
                for m in (2, 5)}
    assert progress == {2: {"minutes": round(130 / 60, 3), "epoch": 0, "optimizer_steps": 2},
                        5: {"minutes": round(301 / 60, 3), "epoch": 1, "optimizer_steps": 4}}
    # a resumed run past both marks does not overwrite them
    resumed = SaveSnapshots([2, 5], tmp_path, state)
    with torch.no_grad():
        first.fill_(9.0)
    resumed.on_train_batch_end(trainer, module, None, None, 0)
    assert float(next(load_model(tmp_path / "snapshots" / "minutes_2.pth").parameters()).detach().flatten()[0]) == 2.0


def test_a_damaged_last_checkpoint_is_named_and_training_continues_from_the_newest_intact_one(work):
    """A truncated last.ckpt (a partial copy, a full disk): one line names it, training continues from the newest
    checkpoint that loads and says so; with no intact checkpoint left, one line says what to do, no traceback."""
    import shutil

    from local.benchmarks.resume import stage2

    exp = work / "exp_damaged"
    run_stage2(work, "tiny", exp, overrides=["training.epochs=1"], log=work / "damaged0.log")
    (exp / "tiny" / "best_model.pth").unlink()  # as if the run had been stopped before it wrote its package
    last = exp / "tiny" / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    _, text = run_stage2(work, "tiny", exp, overrides=["training.epochs=1"], log=work / "damaged1.log")
    assert f"stage 2: {last} does not load" in text
    assert "continuing from epoch000-val_loss" in text and "damaged file is kept as last.ckpt.damaged" in text
    assert (exp / "tiny" / "best_model.pth").is_file() and last.with_name("last.ckpt.damaged").is_file()
    assert "Traceback" not in text

    (exp / "tiny" / "best_model.pth").unlink()
    for path in last.parent.glob("*.ckpt"):
        path.write_bytes(b"PK\x03\x04 truncated")
    log = work / "damaged2.log"
    with open(log, "w") as out:
        proc = stage2(work, "tiny", exp, ["training.epochs=1"], 2, 2, stdout=out, stderr=out)
        assert proc.wait() != 0
    text = log.read_text()
    assert "no other checkpoint" in text and "Traceback" not in text
    shutil.rmtree(exp)


def test_init_from_starts_a_new_experiment_from_another_ones_weights_and_refuses_another_architecture(work):
    """training.init_from (fine-tuning): a new experiment's first optimizer step starts from the source's best
    weights (its model package, loaded independently here), training.json names the source and its SHA-256; a
    config of another architecture is refused in one line naming the differing key, before any training."""
    import hashlib

    from local.benchmarks.resume import stage2
    from local.models import build_model
    from local.training.finetune import load_initial_weights

    exp = work / "exp_finetune"
    run_stage2(work, "tiny", exp, overrides=["training.epochs=1"], log=work / "pretrain.log")
    source = exp / "tiny" / "best_model.pth"
    cfg = yaml.safe_load((exp / "tiny" / "conf.yml").read_text())
    cfg["training"]["init_from"] = str(exp / "tiny")
    model = build_model(cfg)
    assert load_initial_weights(model, cfg)["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    expected = torch.load(source, weights_only=True)["state_dict"]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in expected.items())

    _, text = run_stage2(work, "tiny", work / "exp_finetuned",
                         overrides=["training.epochs=1", f"training.init_from={exp / 'tiny'}"], log=work / "ft.log")
    assert f"starting from the weights of {source}" in text
    assert (work / "exp_finetuned" / "tiny" / "init_from.json").is_file()
    # one line per validation (val_check_interval 0.5: two in the epoch), with the losses of the metrics log
    import re

    lines = re.findall(r"stage 2: epoch 0 \(step (\d+)\): train_loss [-\d.]+, val_loss ([-\d.]+), lr [^,]+, "
                       r"\d+ s, best val_loss ([-\d.]+) \(epoch 0\)", text)
    logged = pd.read_csv(next((work / "exp_finetuned" / "tiny" / "logs").glob("run*/metrics.csv")))
    assert [float(v) for _, v, _ in lines] == [round(v, 4) for v in logged["val_loss"].dropna()]
    assert [float(b) for _, _, b in lines] == [round(v, 4) for v in logged["val_loss"].dropna().cummin()]
    record = json.loads((work / "exp_finetuned" / "tiny" / "training.json").read_text())["init_from"]
    assert record == {"path": str(source), "sha256": hashlib.sha256(source.read_bytes()).hexdigest()}

    log = work / "ft_refused.log"
    with open(log, "w") as out:
        proc = stage2(work, "tiny", work / "exp_refused", ["training.epochs=1", "model.hidden_size=8",
                                                            f"training.init_from={exp / 'tiny'}"], 2, 2,
                      stdout=out, stderr=out)
        assert proc.wait() != 0
    text = log.read_text()
    assert "(model.hidden_size = 16 there, 8 here); fine-tuning keeps the architecture" in text
    assert "Traceback" not in text

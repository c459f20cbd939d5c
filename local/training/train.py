"""Stage 2: train an experiment with pytorch-lightning on Asteroid's `System`.

Writes into exp/<tag>/: `conf.yml` (the merged config, frozen), `checkpoints/` (last.ckpt, refreshed
every `training.checkpoint_every_n_steps` steps and at every validation, and the best k by validation
loss; all written atomically), `logs/run<N>/metrics.csv` (CSV logger, one folder per run, so a resumed
run keeps the earlier logs), `best_model.pth` (Asteroid `serialize()` package of the best checkpoint)
and `training.json` (epochs, best validation loss, wall time, parameter count).

An interrupted run (even by kill -9) resumes exactly from `checkpoints/last.ckpt` (local/training/resumable.py);
a finished one is skipped. With `training.devices`/`num_nodes` > 1, Lightning runs distributed data
parallel: every rank runs this same function, the views are sharded per rank, and only global rank 0
writes the experiment's files.
"""
import json
import math
import sys
import time
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
from asteroid.engine import System
from pytorch_lightning.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint, TQDMProgressBar
from pytorch_lightning.loggers import CSVLogger
from torch.utils.data import DataLoader

from local.common import io_utils, ownership
from local.common.errors import RecipeError
from local.common.frozen import EPOCH_BOUNDARY_CHANGES, check_frozen_config, record_changes, write_frozen
from local.data.dataset import ViewDataset
from local.data.dynamic_mixing import check_augmentation, dynamic_mixing_dataset
from local.data.licenses import training_licenses
from local.data.queries import QueryDataset
from local.data.sources import load_sources
from local.data.views import split_candidates
from local.models import MODELS, build_model, count_parameters, model_package
from local.models.card import model_card
from local.training.finetune import INIT_RECORD, load_initial_weights
from local.training.losses import batch_loss, make_loss
from local.training.provenance import next_run_number, record_run
from local.training.resumable import AtomicCheckpointIO, EpochBatchSampler, LastCheckpoint, ResumeState

# Lightning warns that a plain DataLoader cannot resume mid-epoch; ours does (local/training/resumable.py).
warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch ended")
# Lightning 2.6 calls a torch pytree API that torch 2.11 deprecates; nothing a user can act on
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*is deprecated")

class SeparationSystem(System):
    """Asteroid's System, logging the training loss per epoch as well as per step."""

    @staticmethod
    def config_to_hparams(dic):
        """Flat hyper-parameters for the logger: lists and None as strings (Asteroid makes tensors of
        lists, which fails for lists of names)."""
        from asteroid.utils import flatten_dict

        return {k: (str(v) if v is None or isinstance(v, (list, tuple)) else v) for k, v in flatten_dict(dic).items()}

    def common_step(self, batch, batch_nb, train=True):
        inputs, targets = batch
        return batch_loss(self.loss_func, self.model, inputs, targets)

    # sync_dist: with several ranks, the logged losses are means over all of them, so that every rank
    # takes the same checkpoint, scheduler and early-stopping decisions.
    def training_step(self, batch, batch_nb):
        loss = self.common_step(batch, batch_nb, train=True)
        self.log("loss", loss, on_step=True, on_epoch=True, prog_bar=True, logger=True, sync_dist=True)
        return loss

    def validation_step(self, batch, batch_nb):
        loss = self.common_step(batch, batch_nb, train=False)
        self.log("val_loss", loss, on_epoch=True, prog_bar=True, sync_dist=True)


class ApplyChangedSettings(pl.Callback):
    """After a resumed checkpoint restored the optimizer and callbacks, impose the new learning rate and
    early-stopping patience (the checkpoint would otherwise bring back the old ones)."""

    def __init__(self, lr, patience):
        self.lr, self.patience = lr, patience
        self._applied = False

    # At the first epoch start (before LearningRateMonitor logs, which comes later in the callback list)
    # or, for a run resumed mid-epoch, the first batch: after everything the resume restores or replays
    # (LastCheckpoint's owed scheduler step of the previous epoch belongs to the old settings).
    def on_train_epoch_start(self, trainer, pl_module):
        self._apply(trainer)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._apply(trainer)

    def _apply(self, trainer):
        if self._applied:
            return
        self._applied = True
        for optimizer in trainer.optimizers:
            for group in optimizer.param_groups:
                group["lr"] = self.lr
        for config in trainer.lr_scheduler_configs:  # a closed-form schedule (cosine) scales from the new rate
            scheduler = config.scheduler
            if isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
                scheduler.base_lrs = [self.lr] * len(scheduler.base_lrs)
                for group, factor in zip(scheduler.optimizer.param_groups, scheduler.lr_lambdas):
                    group["lr"] = self.lr * factor(scheduler.last_epoch)
        for callback in trainer.callbacks:
            if isinstance(callback, EarlyStopping) and self.patience:
                callback.patience = int(self.patience)


def make_optimizer(params, optim_cfg):
    name = optim_cfg["optimizer"]
    kwargs = dict(lr=float(optim_cfg["lr"]), weight_decay=float(optim_cfg["weight_decay"]))
    if name == "adam":
        return torch.optim.Adam(params, **kwargs)
    if name == "adamw":
        return torch.optim.AdamW(params, **kwargs)
    if name == "sgd":
        return torch.optim.SGD(params, momentum=0.9, **kwargs)
    raise RecipeError(f"unknown optim.optimizer '{name}'; known: adam, adamw, sgd")


def cosine_factor(epochs):
    """lr(e) / lr = (1 + cos(pi e / E)) / 2 for epoch e of E (Loshchilov and Hutter 2017, SGDR without restarts):
    the full rate at the start, near zero in the last epoch. A closed form of the epoch, not a recursion on the
    current rate, so a run whose `training.epochs` changes on resume (--allow_change) anneals to the new end."""
    def factor(epoch):
        return 0.5 * (1.0 + math.cos(math.pi * min(epoch, epochs) / epochs))
    return factor


def make_scheduler(optimizer, optim_cfg, epochs):
    name = optim_cfg["scheduler"]
    if name in (None, "none"):
        return None
    if name == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=float(optim_cfg["lr_factor"]), patience=int(optim_cfg["lr_patience"])
        )
    if name == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_factor(int(epochs)))
    raise RecipeError(f"unknown optim.scheduler '{name}'; known: plateau, cosine, none")


def queried(cfg):
    """True for a model that extracts the sound a query names (local/models/query_lstm.py)."""
    return getattr(MODELS.get(cfg["model"]["name"]), "queried", False)


def with_query_labels(cfg, views):
    """A query model's categories: `model.labels`, or where the config leaves it null, the training split's
    categories of the views' dataset, sorted (written into the frozen config, so stage 3 and the model card have
    them). Refuses a query model without the query objective and the query objective without a query model."""
    if queried(cfg) != (cfg["loss"]["name"] == "query_sisdr"):
        raise RecipeError(f"model.name {cfg['model']['name']} and loss.name {cfg['loss']['name']} do not go together: "
                          f"the query models (query_lstm) train with loss.name query_sisdr, and only they")
    if queried(cfg) and not cfg["model"].get("labels"):
        sources, _ = load_sources(Path(views).parent)
        held_out, categories = set(cfg["data"]["query_held_out"]), set(split_candidates(sources, cfg["data"])["train"])
        if held_out - categories:
            raise RecipeError(f"data.query_held_out names {', '.join(sorted(held_out - categories))}, not a category "
                              f"of this dataset (its categories: {', '.join(sorted(categories))})")
        cfg["model"]["labels"] = sorted(categories - held_out)
    return cfg


def query_datasets(cfg, views, datasets):
    """The query items (local/data/queries.py) of the train and val view datasets: by label, or by example clip of
    the same split for `model.query_type: example`; `data.query_held_out` categories never queried."""
    data_cfg, splits = cfg["data"], ("train", "val")
    pools = [None, None]
    if cfg["model"].get("query_type", "label") == "example":
        from local.data.queries import ExamplePool

        sources, root = load_sources(Path(views).parent)
        candidates = split_candidates(sources, data_cfg)
        pools = [ExamplePool(candidates[split], root, ds.sample_rate, data_cfg["query_example_seconds"], ds.cache)
                 for split, ds in zip(splits, datasets)]
    return [QueryDataset(ds, cfg["model"]["labels"], data_cfg["query_negatives"], data_cfg["view_seed"],
                         examples=pool, held_out=data_cfg["query_held_out"],
                         tags=tagging_gate(cfg["model"])) for ds, pool in zip(datasets, pools)]


def tagging_gate(model_cfg):
    """Whether a query model's presence gate is a tagger (its items then carry the mixture's categories)."""
    from local.models.query_lstm import presence_head_of

    return presence_head_of(model_cfg.get("presence_head", "conditioned"), model_cfg.get("query_type", "label"),
                            bool(model_cfg.get("presence_gate", False))) == "tagger"


def make_loaders(cfg, views, root, group_queries=False):
    """Train and val loaders; with `group_queries`, training batches keep the query items of a mixture together
    (a query model with an unconditioned trunk computes it once for them)."""
    tcfg = cfg["training"]
    dynamic = bool(cfg["data"]["dynamic_mixing"])
    check_augmentation(cfg["data"])
    train_set = (dynamic_mixing_dataset(views / "train.csv", cfg["data"]) if dynamic
                 else ViewDataset(views / "train.csv", root))
    val_set = ViewDataset(views / "val.csv", root)
    for ds in (train_set, val_set):
        if ds.sample_rate != int(cfg["data"]["sample_rate"]) or ds.n_src != int(cfg["data"]["n_src"]):
            raise RecipeError(f"{ds.csv_path} holds {ds.n_src}-source views at {ds.sample_rate} Hz, the config "
                              f"asks for {cfg['data']['n_src']} at {cfg['data']['sample_rate']} Hz; re-run stage 1")
    if queried(cfg):  # items (mixture, query, target): every source once, plus negative queries
        train_set, val_set = query_datasets(cfg, views, (train_set, val_set))
    workers, batch_size, seed = int(tcfg["num_workers"]), int(tcfg["batch_size"]), int(tcfg["seed"])
    # Each loader gets its own generator (it seeds the worker processes), so that creating a loader
    # iterator does not draw from the global RNG that dropout uses: a resumed run draws the same masks.
    common = dict(num_workers=workers, persistent_workers=workers > 0)
    group = train_set.slots if group_queries and queried(cfg) else 1
    train_sampler = EpochBatchSampler(len(train_set), batch_size, seed=seed, shuffle=True, drop_last=True,
                                      epoch_in_index=dynamic, group=group)
    val_sampler = EpochBatchSampler(len(val_set), batch_size, shuffle=False, drop_last=False)
    train_loader = DataLoader(train_set, batch_sampler=train_sampler, generator=torch.Generator().manual_seed(seed),
                              **common)
    val_loader = DataLoader(val_set, batch_sampler=val_sampler, generator=torch.Generator().manual_seed(seed), **common)
    return train_loader, val_loader


def write_best_model(model, best_ckpt, exp_dir, cfg, data_dir):
    """Load the best checkpoint's weights into `model` and save it as an Asteroid package with the model card's
    fields (dataset, licenses of the training data, training config: local/models/card.py)."""
    state = torch.load(best_ckpt, map_location="cpu", weights_only=True)["state_dict"]
    model.load_state_dict({k[len("model."):]: v for k, v in state.items() if k.startswith("model.")})
    try:
        licenses = training_licenses(data_dir, cfg["data"])
    except (RecipeError, OSError, KeyError, ValueError) as err:  # never lose a trained model over its card
        print(f"stage 2: the training data's licenses could not be read ({err}); the card says unknown", flush=True)
        licenses = ["unknown"]
    package = model_card(model_package(model), cfg, licenses)
    with io_utils.atomic_path(Path(exp_dir) / "best_model.pth") as tmp:
        torch.save(package, tmp)


class RecordExperiment(pl.Callback):
    """Writes conf.yml, the history of changed settings and the provenance record, on global rank 0
    only, once the ranks have started (each rank took its decisions from the same files before)."""

    def __init__(self, cfg, exp_dir, changes, change_epoch):
        self.cfg, self.exp_dir, self.changes, self.change_epoch = cfg, Path(exp_dir), changes, change_epoch

    def setup(self, trainer, pl_module, stage):
        if trainer.is_global_zero:
            for stale in (self.exp_dir / "checkpoints").glob(".*.ckpt"):  # temporary files of a killed run
                stale.unlink()
            if self.changes:
                record_changes(self.exp_dir, self.changes, self.change_epoch)
            if self.changes or not (self.exp_dir / "conf.yml").is_file():
                write_frozen(self.cfg, self.exp_dir / "conf.yml")
            record_run(self.exp_dir, self.cfg, device=trainer.strategy.root_device, n_devices=trainer.num_devices)
        trainer.strategy.barrier("record_experiment")


class EpochLine(pl.Callback):
    """One line per validation: epoch, the mean training loss of the epoch so far (this process's batches),
    the validation loss, the learning rate and the training time, so that a log tells how training goes without
    opening logs/run<N>/metrics.csv; and the best validation loss so far with its epoch (this run's). Written with
    tqdm.write, so that the line starts on a line of its own below the progress bars, in a terminal and in a log."""

    def __init__(self):
        self.start, self.total, self.count = time.monotonic(), 0.0, 0
        self.best = None  # (val_loss, epoch)

    def on_train_epoch_start(self, trainer, pl_module):
        self.total, self.count = 0.0, 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is not None:
            self.total, self.count = self.total + float(loss), self.count + 1

    def on_validation_epoch_end(self, trainer, pl_module):
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        from tqdm import tqdm

        parts = [f"train_loss {self.total / self.count:.4f}"] if self.count else []
        if "val_loss" in trainer.callback_metrics:
            val = float(trainer.callback_metrics["val_loss"])
            parts.append(f"val_loss {val:.4f}")
            if self.best is None or val < self.best[0]:
                self.best = (val, trainer.current_epoch)
        lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else None
        best = f", best val_loss {self.best[0]:.4f} (epoch {self.best[1]})" if self.best else ""
        tqdm.write(f"stage 2: epoch {trainer.current_epoch} (step {trainer.global_step}): {', '.join(parts)}"
                   + (f", lr {lr:.3g}" if lr is not None else "") + f", {time.monotonic() - self.start:.0f} s{best}",
                   file=sys.stdout)
        sys.stdout.flush()


class ShareCores(pl.Callback):
    """Sets torch's thread count from `training.threads` (auto: this host's cores / its running trainings,
    local/common/ownership.py) at the start and every `every_seconds` of training, so that trainings started
    later on the same cores make this one yield instead of all of them stalling."""

    def __init__(self, setting, every_seconds=5.0):
        self.setting, self.every, self.last = setting, float(every_seconds), time.monotonic()

    def _share(self):
        self.last = time.monotonic()
        threads = ownership.fair_threads(self.setting)
        if threads != torch.get_num_threads():
            print(f"stage 2: {threads} torch thread(s) ({ownership.running_jobs()} training(s) on "
                  f"{ownership.available_cores()} cores)", flush=True)
            torch.set_num_threads(threads)

    def setup(self, trainer, pl_module, stage):  # first among the callbacks: the provenance record sees it
        self._share()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.setting in (None, "auto") and time.monotonic() - self.last >= self.every:
            self._share()


class SaveSnapshots(pl.Callback):
    """Saves the model as it is after each of `minutes` of training time (all runs of the experiment, as
    `train_seconds`), as an Asteroid package in exp/<tag>/snapshots/minutes_<m>.pth: the weights a budget
    of that many minutes buys, which the quality-per-CPU-minute benchmark evaluates. Global rank 0 only."""

    def __init__(self, minutes, exp_dir, resume_state):
        self.minutes, self.resume_state = sorted(float(m) for m in minutes), resume_state
        self.dir = Path(exp_dir) / "snapshots"

    @staticmethod
    def name(minutes):
        return f"minutes_{minutes:g}.pth"

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if not trainer.is_global_zero:
            return
        while self.minutes and self.resume_state.train_seconds() >= self.minutes[0] * 60:
            path = self.dir / self.name(self.minutes.pop(0))
            if not path.is_file():  # a resumed run keeps the snapshots its earlier runs took
                self.dir.mkdir(exist_ok=True)
                package = model_package(pl_module.model)
                # how far training got in that time: a budget benchmark compares models per minute, and this
                # says whether a model saw its training set once, many times, or not even once
                progress = {"minutes": round(self.resume_state.train_seconds() / 60, 3),
                            "epoch": int(trainer.current_epoch), "optimizer_steps": int(trainer.global_step)}
                package["infos"]["training_progress"] = progress
                with io_utils.atomic_path(path) as tmp:
                    torch.save(package, tmp)
                print(f"stage 2: wrote {path} after {progress['minutes']:.2f} minutes of training (epoch "
                      f"{progress['epoch']}, {progress['optimizer_steps']} optimizer steps)", flush=True)


def epochs_trained(checkpoint):
    """Epochs whose training part was finished when `checkpoint` was taken: the index (as in
    logs/metrics.csv) of the epoch a resumed run continues in, where changed settings apply from.
    ("epoch" alone is ambiguous: a checkpoint taken when training ends already holds the next index.)"""
    return checkpoint["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"]


def _load_checkpoint(path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated zip raises OSError, RuntimeError or EOFError depending on where it ends
        return err


def _logged_steps(exp_dir):
    """The last training step any run of the experiment logged (logs/run*/metrics.csv), or None."""
    import pandas as pd

    steps = []
    for csv in Path(exp_dir).glob("logs/run*/metrics.csv"):
        try:
            steps.append(int(pd.read_csv(csv)["step"].max()))
        except Exception:
            continue
    return max(steps) if steps else None


def intact_checkpoint(exp_dir, last):
    """(path, loaded checkpoint) to resume from: last.ckpt, or, when it does not load (a partial copy, a full disk
    outside our atomic writes), the newest intact checkpoint of the experiment, saying which and what it loses.
    The damaged file is kept as last.ckpt.damaged; without any intact checkpoint, a RecipeError says what to do."""
    loaded = _load_checkpoint(last)
    if not isinstance(loaded, Exception):
        return last, loaded
    print(f"stage 2: {last} does not load ({type(loaded).__name__}: {str(loaded).splitlines()[0][:120]})", flush=True)
    candidates = []
    for path in sorted(last.parent.glob("*.ckpt")):
        if path != last:
            other = _load_checkpoint(path)
            if not isinstance(other, Exception) and "loops" in other:
                candidates.append((int(other["global_step"]), path, other))
    if not candidates:
        raise RecipeError(f"{last} is damaged and no other checkpoint in {last.parent} loads: restore last.ckpt from "
                          f"a copy, or delete {exp_dir} to train from the start")
    step, path, checkpoint = max(candidates, key=lambda c: c[0])
    logged = _logged_steps(exp_dir)
    lost = f"{max(logged - step, 0)} logged steps after it are trained again" if logged is not None else \
        "the steps after it are trained again"
    last.replace(last.with_name("last.ckpt.damaged"))
    print(f"stage 2: continuing from {path.name} instead (step {step}, epoch {checkpoint['epoch']}); {lost}; the "
          f"damaged file is kept as {last.name}.damaged", flush=True)
    return path, checkpoint


def make_loggers(tcfg, exp_dir, run_number):
    """The CSV logger (logs/run<N>/metrics.csv, read by the curves and reports), and TensorBoard's
    (tensorboard/run<N>/) when training.loggers names it."""
    loggers = [CSVLogger(save_dir=str(exp_dir), name="logs", version=f"run{run_number}")]
    if "tensorboard" in tcfg.get("loggers", ["csv"]):
        from pytorch_lightning.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(save_dir=str(exp_dir), name="tensorboard", version=f"run{run_number}",
                                         default_hp_metric=False))
    return loggers


def make_trainer(cfg, exp_dir, callbacks, run_number):
    tcfg = cfg["training"]
    max_time = {"minutes": float(tcfg["max_minutes"])} if tcfg["max_minutes"] else None
    return pl.Trainer(
        max_epochs=int(tcfg["epochs"]), max_time=max_time, callbacks=callbacks,
        logger=make_loggers(tcfg, exp_dir, run_number),
        accelerator=tcfg["accelerator"], devices=tcfg["devices"], num_nodes=int(tcfg["num_nodes"]),
        strategy=tcfg["strategy"], use_distributed_sampler=False,  # EpochBatchSampler shards, resumably
        plugins=[AtomicCheckpointIO()],
        gradient_clip_val=tcfg["gradient_clip_val"], default_root_dir=str(exp_dir),
        log_every_n_steps=10, enable_model_summary=True, val_check_interval=tcfg["val_check_interval"],
    )


def train(cfg, exp_dir, views, root, allow_change=(), extra_callbacks=()):
    """Train (or resume, or skip) one experiment. Every rank of a distributed run calls this; the
    decisions below only read files, so all ranks take the same ones."""
    exp_dir = Path(exp_dir)
    cfg = with_query_labels(cfg, views)
    changes = check_frozen_config(cfg, exp_dir, allow_change)
    last = exp_dir / "checkpoints" / "last.ckpt"
    if (exp_dir / "best_model.pth").is_file() and not changes:
        print(f"stage 2: {exp_dir}/best_model.pth exists, training is finished; skipped "
              f"(delete {exp_dir} to train again, or continue it with --allow_change)", flush=True)
        return
    if changes and not last.is_file():
        raise RecipeError(f"{last} not found: there is no training to continue with the changed settings")
    tcfg = cfg["training"]
    pl.seed_everything(int(tcfg["seed"]), workers=True)  # before the model: its initial weights are seeded too
    model = build_model(cfg)
    loss = make_loss(cfg)
    shares_trunk = getattr(getattr(model, "masker", None), "n_shared", 0) > 0
    train_loader, val_loader = make_loaders(cfg, Path(views), root, group_queries=shares_trunk)
    resume_path, resume_from = intact_checkpoint(exp_dir, last) if last.is_file() else (None, None)
    change_epoch = epochs_trained(resume_from) if resume_from else 0
    reshaping = [k for k, _, _ in changes if k in EPOCH_BOUNDARY_CHANGES]
    if reshaping and ResumeState.mid_epoch(resume_from, len(train_loader.dataset)):
        raise RecipeError(
            f"{last} was taken in the middle of epoch {change_epoch}; {', '.join(reshaping)} can only change at the "
            f"end of an epoch (the rest of the epoch is laid out in batches per process). Let this epoch finish "
            f"first: --training.epochs {change_epoch + 1} --allow_change training.epochs, then make the change.")

    # a new experiment may start from another's weights; a resumed one has its own in the checkpoint
    if not resume_from:
        load_initial_weights(model, cfg, exp_dir)
    optimizer = make_optimizer(model.parameters(), cfg["optim"])
    scheduler = make_scheduler(optimizer, cfg["optim"], tcfg["epochs"])
    system = SeparationSystem(model=model, loss_func=loss, optimizer=optimizer, train_loader=train_loader,
                              val_loader=val_loader, scheduler=scheduler, config=cfg)
    checkpoint = ModelCheckpoint(dirpath=exp_dir / "checkpoints", filename="epoch{epoch:03d}-val_loss{val_loss:.4f}",
                                 auto_insert_metric_name=False, monitor="val_loss", mode="min",
                                 save_top_k=int(tcfg["save_top_k"]))
    # `checkpoint` before LastCheckpoint: last.ckpt then holds the top-k bookkeeping of the same validation.
    # A log file gets a progress line every `progress_every_n_steps` steps instead of a carriage-return stream.
    resume_state = ResumeState(train_loader.batch_sampler)
    callbacks = [ShareCores(tcfg["threads"]), RecordExperiment(cfg, exp_dir, changes, change_epoch), resume_state,
                 checkpoint, LastCheckpoint(last, tcfg["checkpoint_every_n_steps"]),
                 TQDMProgressBar(refresh_rate=1 if sys.stdout.isatty() else int(tcfg["progress_every_n_steps"]))]
    if tcfg["snapshot_minutes"]:
        callbacks.append(SaveSnapshots(tcfg["snapshot_minutes"], exp_dir, resume_state))
    if changes:
        callbacks.append(ApplyChangedSettings(float(cfg["optim"]["lr"]), tcfg["early_stop_patience"]))
    callbacks.append(LearningRateMonitor(logging_interval="epoch"))
    callbacks.append(EpochLine())
    if tcfg["early_stop_patience"]:
        callbacks.append(EarlyStopping(monitor="val_loss", mode="min", patience=int(tcfg["early_stop_patience"])))
    callbacks += list(extra_callbacks)  # e.g. a sweep's pruning (local/sweep.py)
    trainer = make_trainer(cfg, exp_dir, callbacks, next_run_number(exp_dir))
    n_params = count_parameters(model)
    if trainer.is_global_zero:
        if resume_from:
            print(f"stage 2: resuming from {resume_path} (epoch {resume_from['epoch']}, "
                  f"step {resume_from['global_step']})", flush=True)
        print(f"stage 2: training {cfg['model']['name']} ({n_params:,} parameters) on {len(train_loader.dataset)} "
              f"mixtures, {cfg['training']['epochs']} epochs max", flush=True)
    start = time.time()
    ownership.register_job()
    try:
        trainer.fit(system, ckpt_path=str(resume_path) if resume_from else None)
    finally:
        ownership.unregister_job()
    wall = time.time() - start
    if not trainer.is_global_zero:
        return None
    if not checkpoint.best_model_path:
        raise RecipeError(f"training in {exp_dir} ended before any validation; nothing to save")

    write_best_model(model, checkpoint.best_model_path, exp_dir, cfg, Path(views).parent)
    summary = {
        "model": cfg["model"]["name"], "n_parameters": n_params, "epochs_trained": trainer.current_epoch,
        "global_step": trainer.global_step, "best_val_loss": float(checkpoint.best_model_score),
        "best_checkpoint": Path(checkpoint.best_model_path).name, "train_seconds_this_run": round(wall, 1),
        "train_seconds": round(resume_state.train_seconds(), 1),  # every run, killed ones up to their last checkpoint
        "train_seconds_earlier_runs": round(resume_state.seconds_before, 1),
        "world_size": trainer.world_size,
    }
    if (exp_dir / INIT_RECORD).is_file():  # written when the first run loaded the weights
        summary["init_from"] = json.loads((exp_dir / INIT_RECORD).read_text())
    io_utils.write_json(summary, exp_dir / "training.json")
    print(f"stage 2: done in {wall:.0f} s; best val_loss {summary['best_val_loss']:.4f}; "
          f"wrote {exp_dir}/best_model.pth", flush=True)
    return summary

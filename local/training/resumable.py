"""Exact resumption of training, also across distributed ranks.

Lightning's `fit(ckpt_path=...)` restores the model, optimizer, scheduler, epoch and step, but a
plain DataLoader restarts its epoch from the first batch and the global RNG is not saved, so a run
resumed mid-epoch would see other batches and other dropout masks than an uninterrupted one. Four
pieces close that gap:

- `EpochBatchSampler`: the order of an epoch is a function of (seed, epoch) only; it is sharded over
  the distributed ranks (rank r takes every W-th item of the permutation), and it can start after the
  first `items_done` items of the permutation, which is exactly what the ranks consumed together.
- `ResumeState`: a callback whose state (epoch, items done, RNG states) is saved in every checkpoint;
  on resume it points the sampler at the right place and restores the RNG before the next batch.
  (CUDA RNG states are restored on the same number of GPUs; bit-exactness on GPU also needs
  deterministic kernels, which this repository does not force.)
- `LastCheckpoint`: writes checkpoints/last.ckpt at the points where resuming is exact (see its docstring).
- `AtomicCheckpointIO`: checkpoints are written next to their final name and renamed into place.
  (Lightning's own transaction writes to the system temp directory, and moving from there to exp/ on
  another file system is a copy: a kill -9 during it leaves a truncated last.ckpt.)
"""
import math
import os
import random
import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import Checkpoint
from torch.utils.data import Sampler

from local.common import io_utils, seeding


def rank_and_world_size():
    """(rank, world size) of this process: (0, 1) unless torch.distributed is initialised."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class EpochBatchSampler(Sampler):
    """Batches of item indices for one rank: seeded per epoch, sharded over ranks, resumable.

    Training (`shuffle=True, drop_last=True`): a permutation drawn from (seed, epoch); each rank
    takes every W-th index of it, truncated so that every rank gets the same number of full batches
    (DDP needs equal step counts). Evaluation order (`shuffle=False, drop_last=False`): the items in
    order, the last shard padded by wrapping around, like torch's DistributedSampler.

    After k steps, the W ranks have together consumed exactly the first k*batch_size*W items of the
    permutation, so resuming is "skip that prefix, then shard the rest", with any world size.

    `group` > 1 permutes runs of `group` consecutive items instead of items, each run kept in order: the query
    items of one mixture (local/data/queries.py) then share batches, and a query model computes its unconditioned
    trunk once for them (local/models/query_lstm.py). With several ranks a run may be split between ranks.
    """

    def __init__(self, n_items, batch_size, seed=0, shuffle=True, drop_last=True, epoch_in_index=False, group=1):
        self.n_items, self.batch_size, self.seed = int(n_items), int(batch_size), int(seed)
        self.group = int(group)
        if self.group < 1 or self.n_items % self.group:
            raise ValueError(f"{self.n_items} items do not make runs of {self.group}")
        self.shuffle, self.drop_last = shuffle, drop_last
        # hand out epoch * n_items + i, for datasets that draw a new item per epoch (dynamic mixing)
        self.epoch_in_index = epoch_in_index
        self.epoch = 0
        self._resume_at = None  # (epoch, items_done) for the next iteration only

    def set_epoch(self, epoch):
        """Called by `ResumeState` at the start of every epoch (Lightning itself only calls the
        `set_epoch` of a DataLoader's sampler, not of its batch sampler)."""
        self.epoch = int(epoch)

    def resume(self, epoch, items_done):
        """The next iteration continues `epoch` after the first `items_done` items of its permutation."""
        self._resume_at = (int(epoch), int(items_done))

    def order(self, epoch):
        if not self.shuffle:
            return torch.arange(self.n_items)
        runs = torch.randperm(self.n_items // self.group, generator=torch.Generator().manual_seed(
            seeding.torch_seed("batch_order", self.seed, epoch)))
        return (runs.unsqueeze(1) * self.group + torch.arange(self.group)).flatten()

    def _batches(self, epoch, items_done):
        rank, world = rank_and_world_size()
        rest = self.order(epoch)[items_done:]
        if self.drop_last:
            shard = rest[: len(rest) // world * world][rank::world]
            n_batches = len(shard) // self.batch_size
        else:
            per_rank = math.ceil(len(rest) / world)
            padded = torch.cat([rest, rest[: per_rank * world - len(rest)]]) if len(rest) else rest
            shard = padded[rank::world]
            n_batches = math.ceil(len(shard) / self.batch_size)
        if self.epoch_in_index:
            shard = shard + epoch * self.n_items
        return [shard[i * self.batch_size:(i + 1) * self.batch_size].tolist() for i in range(n_batches)]

    def __iter__(self):
        epoch, items_done = self._resume_at or (self.epoch, 0)
        self._resume_at = None
        batches = self._batches(epoch, items_done)
        if not batches and items_done:  # the checkpoint was taken at the end of that epoch
            epoch, batches = epoch + 1, self._batches(epoch + 1, 0)
        self.epoch = epoch
        yield from batches

    def __len__(self):
        """Batches per rank in a whole epoch (Lightning sizes its progress and validation checks on it)."""
        _, world = rank_and_world_size()
        if self.drop_last:
            return self.n_items // world // self.batch_size
        return math.ceil(math.ceil(self.n_items / world) / self.batch_size)


def _rng_states():
    """The global RNG states (torch CPU and CUDA, numpy, python) as tensors and plain numbers, so that
    checkpoints load with weights_only=True."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
            "python": {"version": version, "internal": torch.tensor(internal, dtype=torch.int64),
                       "gauss_next": gauss_next}}


def _set_rng_states(states):
    torch.set_rng_state(states["torch"])
    if states.get("cuda") and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])
    n = states["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = states["python"]
    random.setstate((p["version"], tuple(p["internal"].tolist()), p["gauss_next"]))


class ResumeState(pl.Callback):
    """Saves where the training sampler stands and the RNG states in every checkpoint, and puts both
    back on resume, so that a resumed run trains on the same batches with the same random draws."""

    def __init__(self, sampler):
        self.sampler = sampler
        self.epoch, self.items_done, self.world_size = 0, 0, 1
        self._restored_rng = None
        # training time of earlier runs (up to their last checkpoint) and when this run started
        self.seconds_before, self.started = 0.0, time.time()

    def train_seconds(self):
        """Wall time spent training this experiment over every run, up to now."""
        return self.seconds_before + time.time() - self.started

    def on_train_epoch_start(self, trainer, pl_module):
        # Not called for an epoch resumed in its middle. The epoch's loader iterator is created after
        # this hook (except the first epoch of a run, whose iterator starts at epoch 0 or the resume point).
        self.epoch, self.items_done = trainer.current_epoch, 0
        self.sampler.set_epoch(trainer.current_epoch)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        # Runs before the checkpoint callbacks (Lightning orders those last), so a step checkpoint
        # taken after this batch counts it. The epoch check covers a run resumed at an epoch's end,
        # for which Lightning does not call on_train_epoch_start again.
        if trainer.current_epoch != self.epoch:
            self.epoch, self.items_done = trainer.current_epoch, 0
        self.world_size = trainer.world_size
        self.items_done += len(batch[0]) * trainer.world_size

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self._restored_rng is not None:
            _set_rng_states(self._restored_rng)
            self._restored_rng = None

    def state_dict(self):
        return {"epoch": self.epoch, "items_done": self.items_done, "world_size": self.world_size,
                "batch_size": self.sampler.batch_size, "rng": _rng_states(), "train_seconds": self.train_seconds()}

    @staticmethod
    def mid_epoch(checkpoint, n_items):
        """Whether `checkpoint` was taken with batches of its epoch still to run (with the batch size and
        number of processes it was taken with): then those cannot change without replaying or dropping data."""
        state = checkpoint.get("callbacks", {}).get("ResumeState")
        if not state or not state["items_done"]:
            return False
        world = state.get("world_size", 1)
        return (n_items - state["items_done"]) // world >= state.get("batch_size", 1)

    def load_state_dict(self, state_dict):
        # Called before the training loader is iterated (Lightning restores callbacks first).
        self.epoch, self.items_done = state_dict["epoch"], state_dict["items_done"]
        self.sampler.resume(self.epoch, self.items_done)
        self._restored_rng = state_dict["rng"]
        # `started` stays at this run's start: the run's set-up counts, as it does in the run's wall time
        self.seconds_before = float(state_dict.get("train_seconds", 0.0))


def step_epoch_schedulers(trainer, metrics, plateau_only=False):
    """Take one epoch step of every epoch-interval LR scheduler (plateau ones with their monitored value), or of
    the plateau ones only."""
    for config in trainer.lr_scheduler_configs:
        if config.interval != "epoch" or (plateau_only and not config.reduce_on_plateau):
            continue
        if config.reduce_on_plateau:
            if metrics.get(config.monitor) is not None:
                config.scheduler.step(metrics[config.monitor])
        else:
            config.scheduler.step()


class LastCheckpoint(Checkpoint):
    """checkpoints/last.ckpt, the state a resumed run starts from, written through the trainer (rank 0
    writes it, atomically): every `every_n_steps` training steps, after every validation, at every
    epoch end and when training stops (max_epochs, max_time, early stopping).

    Lightning behaviours that would make a resume inexact, handled here:
    - a checkpoint taken on a step that a validation follows would make the resumed run skip that
      validation: step checkpoints are not taken there (the validation's own checkpoint follows);
    - epoch schedulers step after the epoch-end hooks, and in the first epoch of a resumed run Lightning
      steps the others (cosine) but skips the plateau ones, whose monitored value it does not keep. An
      epoch-end checkpoint records the pending step and the monitored values, and the resumed run takes the
      plateau step before training; a run resumed mid-epoch takes it at the end of that epoch.
    (Lightning's ModelCheckpoint(save_last=True) also refreshes last.ckpt only when it saves a top-k
    checkpoint, so a resume could go back epochs.)"""

    def __init__(self, path, every_n_steps=None):
        self.path, self.every_n_steps = Path(path), every_n_steps
        self._saved = None  # (global step, where) of the last save
        self._batches_done = 0
        self._state = {"scheduler_step_pending": False, "metrics": {}}
        self._restored = None

    def _save(self, trainer, where, scheduler_step_pending=False):
        if trainer.sanity_checking or self._saved == (trainer.global_step, where):
            return
        metrics = {c.monitor: float(trainer.callback_metrics[c.monitor]) for c in trainer.lr_scheduler_configs
                   if c.monitor and c.monitor in trainer.callback_metrics}
        self._state = {"scheduler_step_pending": scheduler_step_pending, "metrics": metrics}
        trainer.save_checkpoint(self.path, weights_only=False)  # the full state (and no log line about it)
        self._saved = (trainer.global_step, where)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self._batches_done = batch_idx + 1
        if not self.every_n_steps or trainer.global_step % self.every_n_steps:
            return
        at_end = self._batches_done == trainer.num_training_batches
        if at_end or (trainer.val_check_batch and self._batches_done % trainer.val_check_batch == 0):
            return  # a validation or the epoch's end follows; the checkpoint comes after it
        self._save(trainer, "step")

    def on_validation_end(self, trainer, pl_module):
        if self._batches_done < trainer.num_training_batches:  # at the epoch's end: on_train_epoch_end saves
            self._save(trainer, "validation")

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.fit_loop.restarting:  # an epoch resumed mid-way: Lightning will not step the plateau schedulers
            step_epoch_schedulers(trainer, {k: float(v) for k, v in trainer.callback_metrics.items()},
                                  plateau_only=True)
            self._save(trainer, "epoch end")
        else:
            self._save(trainer, "epoch end", scheduler_step_pending=True)

    def on_train_end(self, trainer, pl_module):
        self._save(trainer, "end")

    def state_dict(self):
        return dict(self._state)

    def load_state_dict(self, state_dict):
        self._restored = state_dict

    def on_train_start(self, trainer, pl_module):
        restored, self._restored = self._restored, None
        if restored and restored["scheduler_step_pending"]:  # the step the checkpoint's epoch end still owed
            step_epoch_schedulers(trainer, restored["metrics"], plateau_only=True)


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save to a temporary file in the checkpoint's directory, then os.replace into place."""

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        with io_utils.atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())

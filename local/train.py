"""Stage 2: train an experiment with pytorch-lightning on Asteroid's `System`.

Writes into exp/<tag>/: `conf.yml` (the merged config, frozen), `checkpoints/` (last.ckpt and the best
k by validation loss), `logs/metrics.csv` (CSV logger), `best_model.pth` (Asteroid `serialize()`
package of the best checkpoint) and `training.json` (epochs, best validation loss, wall time,
parameter count). An interrupted run resumes from `checkpoints/last.ckpt`; a finished one is skipped.
"""
import sys
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
import yaml
from asteroid.engine import System
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint, TQDMProgressBar
from pytorch_lightning.loggers import CSVLogger
from torch.utils.data import DataLoader

from local import io_utils
from local.config import diff_configs
from local.dataset import ViewDataset
from local.errors import RecipeError
from local.losses import make_loss
from local.models import build_model, count_parameters, model_package

# Groups that may change after training without making the experiment a different one.
NOT_FROZEN = ("eval",)


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
        if getattr(self.loss_func, "uses_model", False):  # e.g. deep clustering: embeddings, not waveforms
            return self.loss_func(self.model, inputs, targets)
        return self.loss_func(self(inputs), targets)

    def training_step(self, batch, batch_nb):
        loss = self.common_step(batch, batch_nb, train=True)
        self.log("loss", loss, on_step=True, on_epoch=True, prog_bar=True, logger=True)
        return loss


def frozen_part(cfg):
    return {k: v for k, v in cfg.items() if k not in NOT_FROZEN}


def check_frozen_config(cfg, exp_dir):
    """Refuse to continue an experiment whose frozen conf.yml differs from the requested config."""
    frozen_path = Path(exp_dir) / "conf.yml"
    if not frozen_path.is_file():
        return
    frozen = yaml.safe_load(frozen_path.read_text())
    diff = diff_configs(frozen_part(frozen), frozen_part(cfg))
    if diff:
        raise RecipeError(
            f"{frozen_path} differs from the requested config:\n" + "\n".join(diff) +
            f"\nUse another --tag (or --exp_dir), or delete {exp_dir} to start this experiment again."
        )


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


def make_scheduler(optimizer, optim_cfg):
    name = optim_cfg["scheduler"]
    if name in (None, "none"):
        return None
    if name == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=float(optim_cfg["lr_factor"]), patience=int(optim_cfg["lr_patience"])
        )
    raise RecipeError(f"unknown optim.scheduler '{name}'; known: plateau, none")


def make_loaders(cfg, views, root):
    tcfg = cfg["training"]
    train_set = ViewDataset(views / "train.csv", root)
    val_set = ViewDataset(views / "val.csv", root)
    for ds in (train_set, val_set):
        if ds.sample_rate != int(cfg["data"]["sample_rate"]) or ds.n_src != int(cfg["data"]["n_src"]):
            raise RecipeError(f"{ds.csv_path} holds {ds.n_src}-source views at {ds.sample_rate} Hz, the config asks for "
                              f"{cfg['data']['n_src']} at {cfg['data']['sample_rate']} Hz; re-run stage 1")
    workers = int(tcfg["num_workers"])
    common = dict(batch_size=int(tcfg["batch_size"]), num_workers=workers, persistent_workers=workers > 0)
    generator = torch.Generator().manual_seed(int(tcfg["seed"]))
    train_loader = DataLoader(train_set, shuffle=True, drop_last=True, generator=generator, **common)
    val_loader = DataLoader(val_set, shuffle=False, **common)
    return train_loader, val_loader


def write_best_model(model, best_ckpt, exp_dir):
    """Load the best checkpoint's weights into `model` and save it as an Asteroid package."""
    state = torch.load(best_ckpt, map_location="cpu", weights_only=True)["state_dict"]
    model.load_state_dict({k[len("model."):]: v for k, v in state.items() if k.startswith("model.")})
    with io_utils.atomic_path(Path(exp_dir) / "best_model.pth") as tmp:
        torch.save(model_package(model), tmp)


def train(cfg, exp_dir, views, root):
    exp_dir = Path(exp_dir)
    check_frozen_config(cfg, exp_dir)
    if (exp_dir / "best_model.pth").is_file():
        print(f"stage 2: {exp_dir}/best_model.pth exists, training is finished; skipped "
              f"(delete {exp_dir} to train again)", flush=True)
        return
    model = build_model(cfg)
    loss = make_loss(cfg)
    train_loader, val_loader = make_loaders(cfg, Path(views), root)
    if not (exp_dir / "conf.yml").is_file():
        io_utils.write_yaml(cfg, exp_dir / "conf.yml")

    tcfg = cfg["training"]
    pl.seed_everything(int(tcfg["seed"]), workers=True)
    optimizer = make_optimizer(model.parameters(), cfg["optim"])
    scheduler = make_scheduler(optimizer, cfg["optim"])
    system = SeparationSystem(model=model, loss_func=loss, optimizer=optimizer, train_loader=train_loader,
                              val_loader=val_loader, scheduler=scheduler, config=cfg)
    checkpoint = ModelCheckpoint(dirpath=exp_dir / "checkpoints", filename="epoch{epoch:03d}-val_loss{val_loss:.4f}",
                                 auto_insert_metric_name=False, monitor="val_loss", mode="min",
                                 save_top_k=int(tcfg["save_top_k"]), save_last=True)
    # A log file gets a progress line every 50 steps instead of a carriage-return stream per step.
    callbacks = [checkpoint, TQDMProgressBar(refresh_rate=1 if sys.stdout.isatty() else 50)]
    if tcfg["early_stop_patience"]:
        callbacks.append(EarlyStopping(monitor="val_loss", mode="min", patience=int(tcfg["early_stop_patience"])))
    max_time = {"minutes": float(tcfg["max_minutes"])} if tcfg["max_minutes"] else None
    trainer = pl.Trainer(
        max_epochs=int(tcfg["epochs"]), max_time=max_time, callbacks=callbacks,
        logger=CSVLogger(save_dir=str(exp_dir), name="", version="logs"),
        accelerator=tcfg["accelerator"], devices=tcfg["devices"],
        gradient_clip_val=tcfg["gradient_clip_val"], default_root_dir=str(exp_dir),
        log_every_n_steps=10, enable_model_summary=True, val_check_interval=tcfg["val_check_interval"],
    )
    last = exp_dir / "checkpoints" / "last.ckpt"
    if last.is_file():
        print(f"stage 2: resuming from {last}", flush=True)
    n_params = count_parameters(model)
    print(f"stage 2: training {cfg['model']['name']} ({n_params:,} parameters) on {len(train_loader.dataset)} "
          f"mixtures, {cfg['training']['epochs']} epochs max", flush=True)
    start = time.time()
    trainer.fit(system, ckpt_path=str(last) if last.is_file() else None)
    wall = time.time() - start
    if not checkpoint.best_model_path:
        raise RecipeError(f"training in {exp_dir} ended before any validation; nothing to save")

    write_best_model(model, checkpoint.best_model_path, exp_dir)
    summary = {
        "model": cfg["model"]["name"], "n_parameters": n_params, "epochs_trained": trainer.current_epoch,
        "global_step": trainer.global_step, "best_val_loss": float(checkpoint.best_model_score),
        "best_checkpoint": Path(checkpoint.best_model_path).name, "train_seconds_this_run": round(wall, 1),
    }
    io_utils.write_json(summary, exp_dir / "training.json")
    print(f"stage 2: done in {wall:.0f} s; best val_loss {summary['best_val_loss']:.4f}; wrote {exp_dir}/best_model.pth",
          flush=True)
    return summary

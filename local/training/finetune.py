"""Fine-tuning: a new experiment that starts from the best weights of another (`training.init_from`).

Why: a researcher's own folder of sounds is small (a few dozen files per category), and a model trained on it
from scratch learns the files rather than the categories (issue 20). Starting from a model pretrained on more
sounds and training on the small folder is the usual remedy. Only the weights are taken: the optimizer, the
learning-rate schedule and the epoch count start afresh, as in any new experiment. The architecture must be the
same (the `model` and `filterbank` groups, `data.n_src`, `data.sample_rate`); anything else may differ, the data
above all. The source experiment's package and its SHA-256 are recorded in `training.json` and printed, so the
provenance of the fine-tuned model names what it started from.
"""
import hashlib
from pathlib import Path

import torch
import yaml

from local.common.errors import RecipeError

MUST_MATCH = (("model",), ("filterbank",), ("data", "n_src"), ("data", "sample_rate"))


def _get(cfg, keys):
    for key in keys:
        cfg = (cfg or {}).get(key)
    return cfg


def _flat(value, prefix):
    if isinstance(value, dict):
        return {k2: v2 for k, v in value.items() for k2, v2 in _flat(v, f"{prefix}.{k}").items()}
    return {prefix: value}


def source_package(init_from):
    """(best_model.pth, conf.yml) of `init_from`: an experiment folder or its best_model.pth."""
    path = Path(init_from)
    package = path / "best_model.pth" if path.is_dir() else path
    if not package.is_file():
        raise RecipeError(f"training.init_from: {package} not found; train that experiment first (stage 2) or "
                          f"give the folder of one that has a best_model.pth")
    conf = package.parent / "conf.yml"
    if not conf.is_file():
        raise RecipeError(f"training.init_from: {conf} not found next to {package}; init_from needs the experiment "
                          f"folder (its conf.yml says which architecture the weights belong to)")
    return package, conf


def load_initial_weights(model, cfg):
    """Load the weights of `cfg['training']['init_from']` into `model`; returns the provenance record (None when
    the key is unset). Refuses, in one line naming the first differing key, a source of another architecture."""
    init_from = cfg["training"].get("init_from")
    if not init_from:
        return None
    package, conf = source_package(init_from)
    try:
        source_cfg = yaml.safe_load(conf.read_text())
    except yaml.YAMLError as err:
        raise RecipeError(f"training.init_from: {conf} is not YAML ({err}); fix it or use another experiment") from None
    for keys in MUST_MATCH:
        ours, theirs = _flat(_get(cfg, keys), ".".join(keys)), _flat(_get(source_cfg, keys), ".".join(keys))
        for key in sorted(set(ours) | set(theirs)):
            if ours.get(key) != theirs.get(key):
                raise RecipeError(
                    f"training.init_from: {conf} has {key} = {theirs.get(key)!r}, this config {ours.get(key)!r}; "
                    f"fine-tuning keeps the architecture: use the same model, filterbank, n_src and sample rate")
    data = package.read_bytes()
    try:
        state = torch.load(package, map_location="cpu", weights_only=True)["state_dict"]
        model.load_state_dict(state)
    except Exception as err:
        raise RecipeError(f"training.init_from: {package} does not load into this model ({err}); "
                          f"re-train that experiment with this version of the code") from None
    record = {"path": str(package), "sha256": hashlib.sha256(data).hexdigest()}
    print(f"stage 2: starting from the weights of {package} (fine-tuning; new optimizer and schedule)", flush=True)
    return record

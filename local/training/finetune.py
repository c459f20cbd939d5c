"""Fine-tuning: a new experiment that starts from the best weights of another (`training.init_from`).

Why: a researcher's own folder of sounds is small (a few dozen files per category), and a model trained on it
from scratch learns the files rather than the categories (issue 20). Starting from a model pretrained on more
sounds and training on the small folder is the usual remedy. Only the weights are taken: the optimizer, the
learning-rate schedule and the epoch count start afresh, as in any new experiment. The architecture must be the
same (the family, every parameter's name and shape, the filterbank, `data.n_src`, `data.sample_rate`); anything
else may differ, the data above all. The source package and its SHA-256 are written to `exp/<tag>/init_from.json`
when the first run loads them (so a run killed and resumed keeps them) and to `training.json`, and printed.
"""
import hashlib
import io
from pathlib import Path

import torch

from local.common import io_utils
from local.common.config import flatten
from local.common.errors import RecipeError
from local.common.frozen import read_frozen

INIT_RECORD = "init_from.json"  # exp/<tag>/init_from.json: the source package and its SHA-256, from the first run
SAME_MEANING = (("filterbank",), ("data", "n_src"), ("data", "sample_rate"))  # same shapes could still mean otherwise


def _differing(ours, theirs, keys):
    """'key = theirs there, ours here' for each key under the group `keys` (e.g. ('data', 'n_src')) that differs."""
    prefix = ".".join(keys)
    mine = {k: v for k, v in flatten(ours).items() if k == prefix or k.startswith(prefix + ".")}
    other = {k: v for k, v in flatten(theirs).items() if k == prefix or k.startswith(prefix + ".")}
    return [f"{k} = {other.get(k)!r} there, {mine.get(k)!r} here" for k in sorted(set(mine) | set(other))
            if mine.get(k) != other.get(k)]


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
                          f"folder (its conf.yml says which data the weights belong to)")
    return package, conf


def load_initial_weights(model, cfg, exp_dir=None):
    """Load the weights of `cfg['training']['init_from']` into `model` and record the source in
    exp_dir/init_from.json; returns that record (None when the key is unset). The source must be the same family
    with every parameter of the same name and shape, and the same filterbank, n_src and sample rate; keys that
    change no weight (dropout, k-means settings, the loss) may differ. A mismatch is one line naming it."""
    init_from = cfg["training"].get("init_from")
    if not init_from:
        return None
    package_path, conf = source_package(init_from)
    try:
        source_cfg = read_frozen(conf)
    except RecipeError as err:
        raise RecipeError(f"training.init_from: {err}") from None
    data = package_path.read_bytes()
    try:
        package = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        state = package["state_dict"]
    except Exception:  # torch's message runs over many lines; the file is what the user can act on
        raise RecipeError(f"training.init_from: {package_path} is not a model package that loads; give an experiment "
                          f"folder or its best_model.pth (written by stage 2)") from None
    where = f"training.init_from: {package_path}"
    if package.get("model_name") != type(model).__name__:
        raise RecipeError(f"{where} holds a {package.get('model_name')}, this config builds a {type(model).__name__}; "
                          f"fine-tuning keeps the architecture")
    for keys in SAME_MEANING:
        differing = _differing(cfg, source_cfg, keys)
        if differing:
            raise RecipeError(f"{where}: {differing[0]}; fine-tuning keeps the filterbank, n_src and sample rate")
    ours = model.state_dict()
    for name in sorted(set(ours) | set(state)):
        if name not in ours or name not in state or ours[name].shape != state[name].shape:
            hint = _differing(cfg, source_cfg, ("model",))
            raise RecipeError(
                f"{where}: parameter {name} is {tuple(state[name].shape) if name in state else 'absent'} there, "
                f"{tuple(ours[name].shape) if name in ours else 'absent'} here"
                + (f" ({hint[0]})" if hint else "") + "; fine-tuning keeps the architecture")
    model.load_state_dict(state)
    record = {"path": str(package_path), "sha256": hashlib.sha256(data).hexdigest()}
    if exp_dir is not None:
        io_utils.write_json(record, Path(exp_dir) / INIT_RECORD)
    print(f"stage 2: starting from the weights of {package_path} (fine-tuning; new optimizer and schedule)", flush=True)
    return record

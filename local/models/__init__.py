"""Model registry: the `model.name` of a config -> a separator class, and loading of model packages.

Every separator maps a waveform mixture [B, T] to estimates [B, n_src, T]. `best_model.pth` is an
Asteroid `serialize()` package (model_name, model_args, state_dict, infos) holding only tensors and
plain Python values, so it loads with `torch.load(weights_only=True)`, plus the model card's fields
(local/models/card.py). Importing this package registers every family with Asteroid, so that
`asteroid.models.BaseModel.from_pretrained(path)` loads any of them.
"""
import difflib
import inspect
from pathlib import Path

import torch
from asteroid.models import ConvTasNet, DPRNNTasNet

from local.common.errors import RecipeError
from local.models.dpcl import DPCLDPRNN
from local.models.gab import GABMasker
from local.models.huang_rnn import DRNNMasker, SRNNMasker
from local.models.lstm import LSTMMasker
from local.models.query_lstm import QueryLSTMExtractor
from local.models.stt import STTMasker
from local.models.sudormrf import SuDORMRFNet
from local.models.vtf import VTFMasker

MODELS = {
    "lstm": LSTMMasker,
    "vtf": VTFMasker,
    "stt": STTMasker,  # the study's own Spectro-Temporal Transformer
    "gab": GABMasker,
    "drnn": DRNNMasker,
    "srnn": SRNNMasker,
    "dpcl_dprnn": DPCLDPRNN,
    "dprnn_tasnet": DPRNNTasNet,  # Asteroid's time-domain DPRNN-TasNet, the speaker-separation baseline
    "sudormrf": SuDORMRFNet,  # Asteroid's SuDoRM-RF (Tzinis et al. 2020), mask layer as a matmul (CPU speed)
    "conv_tasnet": ConvTasNet,  # Asteroid's Conv-TasNet (Luo and Mesgarani 2019)
    "query_lstm": QueryLSTMExtractor,  # label-queried extraction of one sound (issue 23)
}
_BY_CLASS_NAME = {cls.__name__: cls for cls in MODELS.values()}


def _register_with_asteroid():
    """Make every family loadable with Asteroid's `BaseModel.from_pretrained(path)` once `local.models` is imported:
    Asteroid looks a package's `model_name` up among its registered models. Asteroid's own classes are there
    already; SuDORMRFNet keeps Asteroid's name (and class) there, which loads the same weights and gives the same
    outputs, with Asteroid's slower mask layer (local/models/sudormrf.py)."""
    import asteroid.models

    for cls in MODELS.values():
        try:
            asteroid.models.get(cls.__name__)
        except ValueError:
            asteroid.models.register_model(cls)


_register_with_asteroid()


def _check_args(cls, name, args):
    params = inspect.signature(cls.__init__).parameters
    accepted = [p for p in params if p != "self"]
    for key in args:
        if key not in accepted:
            hint = difflib.get_close_matches(key, accepted, n=1)
            hint = f" Did you mean 'model.{hint[0]}'?" if hint else ""
            raise RecipeError(f"unknown config key 'model.{key}' for model '{name}'.{hint} "
                              f"Its keys: "
                              f"{', '.join(a for a in accepted if a not in ('n_src', 'sample_rate', 'fb_kwargs'))}")


def build_model(cfg):
    """The separator an experiment config describes (model group + filterbank + data.n_src/sample_rate)."""
    model_cfg = dict(cfg["model"])
    name = model_cfg.pop("name", None)
    if name not in MODELS:
        raise RecipeError(f"unknown model.name '{name}'; known models: {', '.join(MODELS)}")
    cls = MODELS[name]
    args = {**model_cfg, **cfg["filterbank"]}
    _check_args(cls, name, args)
    try:
        return cls(n_src=int(cfg["data"]["n_src"]), sample_rate=int(cfg["data"]["sample_rate"]), **args)
    except (ValueError, TypeError) as err:
        raise RecipeError(f"model '{name}' cannot be built from this config: {err}") from None


def n_sources(model):
    """Number of sources a separator returns (Asteroid's models keep it on their masker)."""
    return getattr(model, "n_src", None) or model.masker.n_src


def count_parameters(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def model_package(model):
    """Asteroid's `serialize()` package, with version strings as plain `str` (torch's TorchVersion is a
    str subclass that `torch.load(weights_only=True)` refuses)."""
    package = model.serialize()
    versions = package["infos"]["software_versions"]
    package["infos"]["software_versions"] = {k: str(v) for k, v in versions.items()}
    return package


def load_model(path):
    """Rebuild a separator from a `best_model.pth` package; a clear error for anything else."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"model file {path} not found: train the experiment first (stage 2)")
    try:
        package = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise RecipeError(f"{path} is not a model package that loads safely: {err}") from None
    if not isinstance(package, dict) or not {"model_name", "model_args", "state_dict"} <= set(package):
        raise RecipeError(f"{path} is not a model package (expected model_name, model_args, state_dict)")
    cls = _BY_CLASS_NAME.get(package["model_name"])
    if cls is None:
        raise RecipeError(f"{path}: unknown model class {package['model_name']}; known: {', '.join(_BY_CLASS_NAME)}")
    try:
        model = cls(**package["model_args"])
        model.load_state_dict(package["state_dict"])
    except (TypeError, ValueError, RuntimeError) as err:  # a package of an earlier version of the family
        raise RecipeError(f"{path} holds a {package['model_name']} of another version of this code "
                          f"({str(err).splitlines()[0][:160]}); train it again or check out the commit it was made "
                          f"with") from None
    model.eval()
    return model

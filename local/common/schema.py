"""Types and ranges of the config keys: checked when a config is loaded, before any stage starts.

conf/base/common.yml documents every key and its default; this table says what values each may take, so
that `--optim.lr abc`, `--training.batch_size 0` or `--data.n_mixtures {train:200}` stop at once with one
line naming the key, instead of a traceback deep in a stage. The `model` group is checked by the model's
constructor (each family has its own arguments).
"""
import numbers

from local.common.errors import RecipeError

SPLITS = ("train", "val", "test")


def _is_int(v):
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_number(v):
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def integer(lo=None, hi=None, null=False):
    what = "an integer" + (f" >= {lo}" if lo is not None else "") + (f" <= {hi}" if hi is not None else "")
    ok = lambda v: _is_int(v) and (lo is None or v >= lo) and (hi is None or v <= hi)
    return (lambda v: (v is None and null) or ok(v)), what + (" or null" if null else "")


def number(lo=None, above=None, hi=None, null=False):
    what = "a number" + (f" >= {lo}" if lo is not None else "") + (f" > {above}" if above is not None else "") + \
        (f" <= {hi}" if hi is not None else "")
    ok = lambda v: (_is_number(v) and (lo is None or v >= lo) and (above is None or v > above)
                    and (hi is None or v <= hi))
    return (lambda v: (v is None and null) or ok(v)), what + (" or null" if null else "")


def choice(*options):
    return (lambda v: v in options), "one of " + ", ".join(map(str, options))


def boolean():
    return (lambda v: isinstance(v, bool)), "true or false"


def text(null=False):
    return (lambda v: isinstance(v, str) or (null and v is None)), "a string" + (" or null" if null else "")


def per_split(item_ok, item_what, null=False):
    """A mapping {train: ..., val: ..., test: ...}."""
    ok = lambda v: isinstance(v, dict) and set(v) == set(SPLITS) and all(item_ok(x) for x in v.values())
    return (lambda v: (v is None and null) or ok(v)), \
        f"a mapping {{train: ..., val: ..., test: ...}} of {item_what} (YAML flow style needs a space after ':')" + \
        (" or null" if null else "")


def pair(lo_hi_ordered=True):
    ok = lambda v: (isinstance(v, (list, tuple)) and len(v) == 2 and all(_is_number(x) for x in v)
                    and (not lo_hi_ordered or v[0] <= v[1]))
    return ok, "a list [low, high] of two numbers, low <= high"


def _range_or_null(v):
    return v is None or (isinstance(v, (list, tuple)) and len(v) == 2 and all(_is_number(x) and x >= 0 for x in v)
                         and v[0] < v[1])


def _metrics(v):
    return isinstance(v, list) and all(m in ("si_sdr", "sdr", "sir", "sar") for m in v)


RULES = {
    "data.dataset": text(),
    "data.format": choice("auto", "synth", "synth_speakers", "folder", "esc50", "fsdkaggle2018", "listing",
                          "debian_sounds", "debian_speech", "debian_all", "wsj0-2mix",
                          "librimix"),
    "data.source_dir": text(null=True),
    "data.sample_rate": integer(lo=1000),
    "data.n_src": integer(lo=1),
    "data.mixture_seconds": number(above=0),
    "data.n_mixtures": per_split(lambda x: _is_int(x) and x >= 1, "integers >= 1"),
    "data.file_selection_range": per_split(_range_or_null, "[start, end) pairs (integers or fractions) or null",
                                           null=True),
    "data.segment_seconds": number(above=0, null=True),
    "data.disjoint_labels": boolean(),
    "data.drop_small_categories": boolean(),
    "data.level_db_range": pair(),
    "data.view_seed": integer(lo=0),
    "data.n_classes": integer(lo=2, null=True),
    "data.mixing_policy": choice("t0", "t1", "t2"),
    "data.dynamic_mixing": boolean(),
    "data.augmentation.speed": number(lo=0, hi=0.45),
    "data.augmentation.eq_db": number(lo=0, hi=24),
    "data.query_negatives": integer(lo=0),
    "data.query_example_seconds": number(above=0),
    "data.query_held_out": (lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
                            "a list of category names"),
    "filterbank.n_filters": integer(lo=2),
    "filterbank.kernel_size": integer(lo=2),
    "filterbank.stride": integer(lo=1),
    "loss.name": choice("euclidean", "correlation", "discriminative", "sisdr", "deep_clustering", "query_sisdr"),
    "loss.negative_weight": number(lo=0),
    "loss.negative_floor_db": number(hi=0),
    "loss.presence_weight": number(lo=0),
    "loss.missed_weight": number(lo=0),
    "loss.pit": boolean(),
    "loss.domain": choice("magnitude", "complex", "compressed"),
    "loss.compression": number(above=0, hi=1),
    "loss.gamma": number(lo=0),
    "loss.alpha": number(lo=0, hi=1),
    "loss.dc": choice("classic", "whitened"),
    "loss.mi": choice("tpsa", "magnitude"),
    "loss.dc_weights": choice("vad", "magnitude"),
    "loss.vad_db": number(above=0),
    "training.epochs": integer(lo=1),
    "training.batch_size": integer(lo=1),
    "training.num_workers": integer(lo=0),
    "training.seed": integer(lo=0),
    "training.loggers": (lambda v: isinstance(v, list) and "csv" in v and set(v) <= {"csv", "tensorboard"},
                         "a list of csv and tensorboard, with csv (the curves and reports read it)"),
    "training.early_stop_patience": integer(lo=1, null=True),
    "training.save_top_k": integer(lo=1),
    "training.gradient_clip_val": number(above=0, null=True),
    "training.max_minutes": number(above=0, null=True),
    "training.init_from": text(null=True),
    "training.threads": ((lambda v: v == "auto" or (_is_int(v) and v >= 1)), "auto or an integer >= 1"),
    "training.snapshot_minutes": ((lambda v: isinstance(v, list) and all(_is_number(x) and x > 0 for x in v)),
                                  "a list of minutes > 0, e.g. [2, 5, 10] (or [])"),
    "training.val_check_interval": number(above=0),
    "training.checkpoint_every_n_steps": integer(lo=1, null=True),
    "training.progress_every_n_steps": integer(lo=1),
    "training.accelerator": text(),
    "training.devices": integer(lo=1),
    "training.num_nodes": integer(lo=1),
    "training.strategy": text(),
    "optim.optimizer": choice("adam", "adamw", "sgd"),
    "optim.lr": number(above=0),
    "optim.weight_decay": number(lo=0),
    "optim.scheduler": choice("plateau", "cosine", "none"),
    "optim.lr_patience": integer(lo=0),
    "optim.lr_factor": number(above=0, hi=1),
    "eval.metrics": (_metrics, "a list of si_sdr, sdr, sir, sar (STOI and PESQ have their own keys)"),
    "eval.stoi": choice("auto", True, False),
    "eval.pesq": choice("auto", True, False),
    "eval.bss_backend": choice("fast_bss_eval", "pb_bss_eval"),
    "eval.n_examples": integer(lo=0),
    "eval.example_seed": integer(lo=0),
    "eval.oracle": boolean(),
    "eval.bootstrap": integer(lo=100),
    "eval.bootstrap_seed": integer(lo=0),
    "eval.max_mixtures": integer(lo=1, null=True),
    "eval.pick_baseline": (lambda v: v is None or isinstance(v, str), "an experiment folder or null"),
}


def _get(cfg, key):
    node = cfg
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def validate(cfg, origin):
    """Refuse the first value outside its rule, naming the key, the value and what is allowed."""
    for key, (ok, what) in RULES.items():
        present, value = _get(cfg, key)
        if present and not ok(value):
            raise RecipeError(f"config key {key} = {value!r} ({origin}): expected {what}. Set it in the config file "
                              f"or on the command line (--{key} VALUE).")
    fb = cfg.get("filterbank", {})
    if all(_is_int(fb.get(k)) for k in ("n_filters", "kernel_size", "stride")):
        if not fb["stride"] <= fb["kernel_size"] <= fb["n_filters"]:
            raise RecipeError(f"filterbank: expected stride <= kernel_size <= n_filters, got stride {fb['stride']}, "
                              f"kernel_size {fb['kernel_size']}, n_filters {fb['n_filters']} ({origin})")
    return cfg

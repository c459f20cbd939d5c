"""An experiment's frozen config (`exp/<tag>/conf.yml`): its format, and which keys may change when.

Stage 2 freezes the merged config on an experiment's first run; every later stage reads it back through
`read_frozen`. The rules for what may differ from it live here, in one place:

- stage 2, continuing: RUNTIME_KEYS (how the run uses the machine) differ freely; CHANGEABLE keys change only
  when named with `--allow_change` and are recorded in history.txt; of those, EPOCH_BOUNDARY_CHANGES only where
  `last.ckpt` ends an epoch; anything else is another experiment and is refused with a diff;
- stage 3, evaluating: only the NOT_FROZEN groups (`eval`) follow the request; a contradicting command-line key is
  refused, an edited conf/<tag>.yml is reported and not used.

The file carries `format_version`. A key added to conf/base/common.yml within a format takes its default where an
older file lacks it (that key did not exist, so the experiment ran as its default says); a change that alters what
an existing key means raises CONF_FORMAT, and a file of another format is refused with one line.
"""
import copy
import time
from pathlib import Path

from local.common import io_utils
from local.common.config import (
    changed_keys,
    deep_merge,
    default_config,
    diff_configs,
    flatten,
    read_yaml_mapping,
)
from local.common.errors import RecipeError

CONF_FORMAT = 1
FORMAT_KEY = "format_version"

# Groups that may change after training without making the experiment a different one.
NOT_FROZEN = ("eval",)
# how this run uses the machine, not what it trains: free to differ; init_from acts on a new experiment's first
# run only (a resumed one has its weights in its checkpoint), so continuing without repeating it is the same run
RUNTIME_KEYS = ("training.threads", "training.init_from", "training.loggers")
# Keys that may change when an experiment continues, on purpose (--allow_change): they steer the rest
# of the training without making it a different experiment. Each change is recorded in history.txt.
CHANGEABLE = ("optim.lr", "optim.weight_decay", "optim.lr_patience", "optim.lr_factor", "training.epochs",
              "training.early_stop_patience", "training.batch_size", "training.num_workers", "training.max_minutes",
              "training.snapshot_minutes", "training.val_check_interval", "training.gradient_clip_val",
              "training.save_top_k", "training.checkpoint_every_n_steps", "training.progress_every_n_steps",
              "training.accelerator", "training.devices", "training.num_nodes", "training.strategy")
# Changes that reshape how an epoch is cut into steps: allowed only when last.ckpt ends an epoch.
EPOCH_BOUNDARY_CHANGES = ("training.batch_size", "training.devices", "training.num_nodes")


def write_frozen(cfg, path):
    """Write `cfg` as the experiment's conf.yml, stamped with this version's format."""
    io_utils.write_yaml({FORMAT_KEY: CONF_FORMAT, **cfg}, path)


def read_frozen(path):
    """The config stored in an experiment's conf.yml, every key of common.yml present (see the module doc)."""
    path = Path(path)
    data = read_yaml_mapping(path)
    version = data.pop(FORMAT_KEY, None)
    if isinstance(version, int) and version > CONF_FORMAT:
        raise RecipeError(f"{path} was made by a newer version of listener (conf.yml format {version}, this one "
                          f"reads {CONF_FORMAT}): update this checkout (git pull) to use it")
    if version != CONF_FORMAT:
        raise RecipeError(f"{path} was made by an older version of listener (conf.yml format {version or 0}, this "
                          f"one reads {CONF_FORMAT}): delete {path.parent} and train it again (stage 2)")
    return deep_merge(default_config(), data)


def frozen_part(cfg):
    return {k: v for k, v in cfg.items() if k not in NOT_FROZEN}


def recorded_changes(exp_dir):
    """{key: the value it had before its first recorded change} from exp_dir/history.txt."""
    path = Path(exp_dir) / "history.txt"
    first = {}
    for line in (path.read_text().splitlines() if path.is_file() else []):
        key, rest = line.split(" ", 2)[2].split(": ", 1)
        first.setdefault(key, rest.split(" -> ", 1)[0])
    return first


def _set_flat(cfg, key, value):
    node = cfg
    *parents, last = key.split(".")
    for part in parents:
        node = node[part]
    node[last] = value


def check_frozen_config(cfg, exp_dir, allow_change=()):
    """Compare the requested config with the experiment's frozen conf.yml (stage 2, continuing).

    Returns the list of (key, old, new) changes to apply; refuses, with a readable diff, any change not
    named in `allow_change` or not in CHANGEABLE. A key that history.txt shows was changed on purpose,
    requested again at its value from before that change (conf/<tag>.yml was not edited), keeps the
    experiment's recorded value: re-running the plain tag continues the experiment as it stands.
    """
    frozen_path = Path(exp_dir) / "conf.yml"
    if not frozen_path.is_file():
        return []
    frozen = frozen_part(read_frozen(frozen_path))
    history = recorded_changes(exp_dir)
    changes = []
    for key, old, new in changed_keys(frozen, frozen_part(cfg)):
        if key in RUNTIME_KEYS:
            continue
        if key not in allow_change and key in history and str(new) == history[key]:
            _set_flat(cfg, key, old)
            print(f"stage 2: keeping {key} = {old} of {frozen_path} (changed on purpose, see history.txt)", flush=True)
        else:
            changes.append((key, old, new))
    changed = [key for key, _, _ in changes]
    refused = [k for k in changed if k not in allow_change or k not in CHANGEABLE]
    if refused:
        lines = "\n".join(line for line in diff_configs(frozen, frozen_part(cfg))
                          if line.strip().split(":")[0] not in RUNTIME_KEYS)
        raise RecipeError(
            f"{frozen_path} differs from the requested config:\n{lines}\n"
            f"Use another --tag (or --exp_dir), or delete {exp_dir} to start again. To continue this experiment with "
            f"new training settings on purpose, name them: --allow_change '{' '.join(changed)}' "
            f"(changeable: {', '.join(CHANGEABLE)})."
        )
    return changes


def record_changes(exp_dir, changes, epoch):
    """Append 'key: old -> new at epoch N' lines to exp_dir/history.txt."""
    path = Path(exp_dir) / "history.txt"
    previous = path.read_text() if path.is_file() else ""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    lines = "".join(f"{stamp} {k}: {old} -> {new} at epoch {epoch}\n" for k, old, new in changes)
    io_utils.write_text(path, previous + lines)
    for line in lines.splitlines():
        print(f"stage 2: {line}", flush=True)


def evaluation_config(frozen_path, requested, explicit_keys):
    """The config stage 3 evaluates an experiment with: its frozen conf.yml, with the `eval` group and the
    RUNTIME_KEYS from the request (conf/<tag>.yml plus the command line), since those may change freely.

    Anything else comes from the frozen file, so that the oracle sees the model's STFT and the views are
    the ones it was trained for. A key set on the command line that contradicts the frozen value is
    refused, naming it; a difference that comes from conf/<tag>.yml having been edited since is reported.
    """
    frozen = read_frozen(frozen_path)
    cfg = copy.deepcopy(frozen)
    for group in NOT_FROZEN:
        cfg[group] = deep_merge(frozen.get(group) or {}, requested[group])
    for key in RUNTIME_KEYS:
        group, name = key.split(".")
        cfg[group][name] = requested[group][name]
    cfg["tag"] = requested["tag"]
    differences = [(k, a, b) for k, a, b in changed_keys(frozen, requested)
                   if k.split(".")[0] not in (*NOT_FROZEN, "tag") and k not in RUNTIME_KEYS]
    # an override of a mapping ('data.n_mixtures={...}') sets every key below it
    refused = [(k, a, b) for k, a, b in differences if any(k == e or k.startswith(e + ".") for e in explicit_keys)]
    if refused:
        lines = "; ".join(f"{k} = {b!r} (trained with {a!r})" for k, a, b in refused)
        raise RecipeError(f"stage 3 evaluates the experiment as it was trained ({frozen_path}), but the command line "
                          f"asks for {lines}. Drop those options (only eval.* may change at stage 3), or train another "
                          f"--tag with them.")
    defaults = flatten(default_config())
    edited = [k for k, _, new in differences if k not in defaults or new != defaults[k]]  # not just a new default
    if edited:
        print(f"stage 3: evaluating with {frozen_path}; conf/{requested['tag']}.yml now differs in "
              f"{', '.join(edited)} (not used)", flush=True)
    return cfg

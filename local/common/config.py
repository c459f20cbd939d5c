"""Experiment configs: `conf/<tag>.yml` on top of `conf/base/common.yml`, plus command-line overrides.

A config is a dict of groups (data, filterbank, model, loss, training, optim, eval), as in Asteroid's
`conf.yml`. Sharing works by inheritance instead of copying: a config may list `base:` files (paths
relative to its own folder, then to the repository's `conf/`), merged in order before its own keys.
`conf/base/common.yml` is always the first base: it documents every key and is the schema that
unknown keys are checked against (the `model` group is checked by the model's constructor instead,
since each model family has its own arguments).
"""
import copy
import difflib
import re
from pathlib import Path

import yaml

from local.common.errors import RecipeError
from local.common.schema import validate

ROOT = Path(__file__).resolve().parents[2]  # the repository (local/common/config.py)
COMMON = ROOT / "conf" / "base" / "common.yml"
OPEN_GROUPS = ("model",)  # keys validated elsewhere (by the model class)


class _Loader(yaml.SafeLoader):
    """YAML loader that reads 3e-4 as a float (YAML 1.1 wants 3.0e-4 and would give a string)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)?(?:\.[0-9_]*)?[eE][-+]?[0-9]+$|^[-+]?[0-9][0-9_]*\.[0-9_]*$|"
               r"^[-+]?\.[0-9_]+$|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$"),
    list("-+0123456789."),
)


def yaml_load(text):
    return yaml.load(text, Loader=_Loader)


def read_yaml_mapping(path):
    try:
        with open(path) as f:
            data = yaml_load(f)
    except yaml.YAMLError as err:
        raise RecipeError(f"{path} is not valid YAML: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise RecipeError(f"{path} must hold a mapping of config groups, not a {type(data).__name__}")
    return data


def default_config():
    """conf/base/common.yml: every key with its default."""
    return read_yaml_mapping(COMMON)


def deep_merge(base, update):
    """Return `base` updated recursively by `update` (dicts merge, everything else replaces)."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _resolve_base(name, including_file):
    for folder in (Path(including_file).parent, ROOT / "conf"):
        candidate = folder / name
        if candidate.is_file():
            return candidate
    raise RecipeError(f"{including_file}: base config '{name}' not found next to it nor in {ROOT / 'conf'}")


def load_yaml_with_bases(path, _seen=()):
    """Read a config file, merging the files it names under `base:` first."""
    path = Path(path).resolve()
    if path in _seen:
        raise RecipeError(f"{path}: circular 'base:' chain through {', '.join(map(str, _seen))}")
    data = read_yaml_mapping(path)
    bases = data.pop("base", []) or []
    if isinstance(bases, str):
        bases = [bases]
    merged = {}
    for name in bases:
        merged = deep_merge(merged, load_yaml_with_bases(_resolve_base(name, path), _seen + (path,)))
    return deep_merge(merged, data)


def conf_dirs(cwd=None):
    """Where tags are looked up: the recipe's own conf/ (cwd) first, then the repository's."""
    dirs = [Path(cwd or Path.cwd()) / "conf", ROOT / "conf"]
    unique = []
    for d in dirs:
        if d.resolve() not in [u.resolve() for u in unique]:
            unique.append(d)
    return unique


def available_tags(dirs):
    tags = set()
    for d in dirs:
        tags.update(p.stem for p in Path(d).glob("*.yml"))
    return sorted(tags)


def find_config(tag, dirs):
    """`conf/<tag>.yml` in the first folder that has it; a clear error listing the tags otherwise."""
    if not tag or "/" in tag:
        raise RecipeError(f"invalid tag '{tag}': a tag is the name of a file conf/<tag>.yml")
    for d in dirs:
        path = Path(d) / f"{tag}.yml"
        if path.is_file():
            return path
    tags = available_tags(dirs)
    hint = difflib.get_close_matches(tag, tags, n=1)
    hint = f" Did you mean '{hint[0]}'?" if hint else ""
    raise RecipeError(
        f"unknown tag '{tag}': no {tag}.yml in {', '.join(str(d) for d in dirs)}.{hint} "
        f"Available tags: {', '.join(tags) or 'none'}"
    )


def _known_key_error(key_path, known, origin):
    hint = difflib.get_close_matches(key_path[-1], known, n=1)
    hint = f" Did you mean '{'.'.join(key_path[:-1] + [hint[0]])}'?" if hint else ""
    where = ".".join(key_path[:-1]) or "the top level"
    return RecipeError(
        f"unknown config key '{'.'.join(key_path)}' in {origin}.{hint} Known keys in {where}: "
        f"{', '.join(sorted(known))}"
    )


def check_keys(cfg, schema, origin, _path=()):
    """Refuse keys that the schema (common.yml) does not know, naming the key and the file it came from."""
    for key, value in cfg.items():
        path = list(_path) + [key]
        if key not in schema:
            raise _known_key_error(path, list(schema), origin)
        if len(path) == 1 and key in OPEN_GROUPS:
            continue
        if isinstance(schema[key], dict) and isinstance(value, dict):
            check_keys(value, schema[key], origin, path)


def parse_override(text):
    """'group.key=value' -> (['group', 'key'], value), with the value read as YAML (3 -> int, [1, 2] -> list)."""
    if "=" not in text:
        raise RecipeError(f"config override '{text}' must look like group.key=value (on run.sh: --group.key value)")
    key, raw = text.split("=", 1)
    parts = key.strip().lstrip("-").split(".")
    if len(parts) < 2 or not all(parts):
        raise RecipeError(f"config override '{text}': the key must name a group and a key, e.g. training.epochs=5")
    try:
        value = yaml_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return parts, value


def apply_overrides(cfg, overrides, schema):
    cfg = copy.deepcopy(cfg)
    for text in overrides:
        parts, value = parse_override(text)
        node, node_schema = cfg, schema
        for depth, part in enumerate(parts[:-1]):
            open_group = depth == 0 and part in OPEN_GROUPS
            if part not in node_schema and not (depth > 0 and parts[0] in OPEN_GROUPS):
                raise _known_key_error(parts[: depth + 1], list(node_schema), "the command line")
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
            node_schema = {} if open_group else (node_schema.get(part) or {})
        last = parts[-1]
        if parts[0] not in OPEN_GROUPS and last not in node_schema:
            raise _known_key_error(parts, list(node_schema), "the command line")
        node[last] = value
    return cfg


def load_config(tag, overrides=(), dirs=None):
    """The merged config of an experiment: common.yml < bases < conf/<tag>.yml < overrides."""
    dirs = dirs or conf_dirs()
    schema = read_yaml_mapping(COMMON)
    path = find_config(tag, dirs)
    own = load_yaml_with_bases(path)
    check_keys(own, schema, str(path))
    cfg = apply_overrides(deep_merge(schema, own), overrides, schema)
    cfg["tag"] = tag
    return validate(cfg, f"{path} with the command line")


def flatten(cfg, prefix=""):
    out = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


ABSENT = "<absent>"


def changed_keys(old, new):
    """[(dotted key, old value, new value)] for every key that differs between two configs, sorted."""
    a, b = flatten(old), flatten(new)
    return [(k, a.get(k, ABSENT), b.get(k, ABSENT)) for k in sorted(set(a) | set(b))
            if a.get(k, ABSENT) != b.get(k, ABSENT)]


def diff_configs(old, new):
    """Readable lines 'key: old -> new' for every key that differs between two configs."""
    return [f"  {key}: {a!r} -> {b!r}" for key, a, b in changed_keys(old, new)]


def override_keys(overrides):
    """The dotted keys that command-line overrides set ('group.key=value' -> 'group.key')."""
    return {".".join(parse_override(text)[0]) for text in overrides}

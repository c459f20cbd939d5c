"""Stage 1: view CSVs, the mixtures as recipes instead of audio files.

One row per mixture: `mixture_id`, `length` (samples), `sample_rate`, and for each source i:
`path_i` (relative to the dataset root), `label_i`, `start_i`/`end_i` (the segment in the original
file, in the file's own samples, so the loader reads exactly that with a partial read), `mix_start_i`
(where the segment lands in the mixture, in mixture samples) and `gain_db_i` (applied to the segment).

Guarantees (checked by tests): the labels of a mixture are distinct; every split uses the same label
set; each split draws files from its own part of every category (the dataset's own split, or
`file_selection_range`), so no file is shared across splits; segments lie inside their files;
the same sources.csv and seed give the same CSV. Gains set each source's active level to a value drawn
from `level_db_range` (dBFS), measured on the segment as the loader returns it (at the mixture's rate, over
the frames where it sounds: local/data/activity.py); near-silent segments are redrawn so that every
reference is a real sound; with `min_overlap` > 0 every mixture's sources sound together for at least that
long, or for as long as the shortest of them sounds (placements redrawn until they do). views.yml records the
share of mixtures at each overlap.
"""
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from local.common import io_utils, seeding
from local.common.errors import RecipeError
from local.data import activity
from local.data.audio import read_segment
from local.data.scp import SCP_FORMATS, scp_views
from local.data.source_cache import SourceCache
from local.data.sources import SPLITS, dataset_format, load_sources
from local.data.view_csv import view_columns, views_dir

SILENCE_DB = -50.0  # a segment quieter than this (RMS over the segment, dBFS, at the mixture rate) is redrawn
MAX_REDRAWS = 20
# views.yml's format: raised whenever what a view CSV means changes (2: active levels at the mixture rate, minimum
# overlap, independent seed streams). Views of another format are refused with one line rather than read by
# compatibility rules, so every rule has one code path.
VIEWS_FORMAT = 2
STATS_KEY = "overlap_shares"  # views.yml: the measured overlap of the views, not a setting


def fixes_splits(sources):
    """True when sources.csv assigns every file a split (ESC-50 folds, speakers, scp lists)."""
    return bool(len(sources)) and bool((sources["split"].astype(str).str.len() > 0).all())


def view_settings(data_cfg, sources_csv, fixed_splits=False):
    """Everything a view CSV depends on; stored next to the views to refuse a silent mismatch.
    `file_selection_range` does not apply (and is recorded as null) where the dataset fixes its splits."""
    return {
        "n_src": int(data_cfg["n_src"]),
        "sample_rate": int(data_cfg["sample_rate"]),
        "mixture_seconds": float(data_cfg["mixture_seconds"]),
        "n_mixtures": {s: int(data_cfg["n_mixtures"][s]) for s in SPLITS},
        "file_selection_range": None if fixed_splits else data_cfg["file_selection_range"],
        "level_db_range": [float(v) for v in data_cfg["level_db_range"]],
        "view_seed": int(data_cfg["view_seed"]),
        "drop_small_categories": bool(data_cfg.get("drop_small_categories")),
        "segment_seconds": data_cfg.get("segment_seconds"),
        "disjoint_labels": bool(data_cfg.get("disjoint_labels")),
        "n_classes": data_cfg.get("n_classes"),
        "mixing_policy": data_cfg.get("mixing_policy", "t0"),
        "min_overlap": float(data_cfg["min_overlap"]),
        "format_version": VIEWS_FORMAT,
        "sources_sha256": hashlib.sha256(Path(sources_csv).read_bytes()).hexdigest(),
    }


def _select_range(n_files, bounds, split):
    """Indices [start, end) of one category's sorted files for a split: integers, or fractions of n_files."""
    if bounds is None or len(bounds) != 2:
        raise RecipeError(f"data.file_selection_range.{split} must be [start, end), got {bounds!r}")
    lo, hi = bounds
    if all(isinstance(b, int) for b in bounds):
        start, end = lo, min(hi, n_files)
    else:
        start, end = int(round(float(lo) * n_files)), int(round(float(hi) * n_files))
    return start, max(start, end)


def split_candidates(sources, data_cfg):
    """{split: {label: [row, ...]}}: the files each split may draw from, disjoint across splits."""
    has_split = sources["split"].astype(str).str.len() > 0
    if has_split.any() and not has_split.all():
        raise RecipeError("sources.csv gives a split for some files but not others; re-run stage 0")
    ranges = data_cfg.get("file_selection_range") or {}
    out = {}
    for split in SPLITS:
        per_label = {}
        for label, group in sources.groupby("label", sort=True):
            group = group.sort_values("path")
            if has_split.all():  # the dataset's own split; file_selection_range does not apply
                group = group[group["split"] == split]
            else:
                if split not in ranges:
                    raise RecipeError(f"the dataset fixes no splits: data.file_selection_range.{split} is required")
                start, end = _select_range(len(group), ranges[split], split)
                group = group.iloc[start:end]
            per_label[label] = group.to_dict("records")
        out[split] = per_label
    paths = {s: {r["path"] for rows in out[s].values() for r in rows} for s in SPLITS}
    for i, a in enumerate(SPLITS):
        for b in SPLITS[i + 1 :]:
            if paths[a] & paths[b]:
                raise RecipeError(f"splits {a} and {b} share {len(paths[a] & paths[b])} files (e.g. "
                                  f"{sorted(paths[a] & paths[b])[0]}): make data.file_selection_range.{a} and .{b} "
                                  f"disjoint")
    labels = {s: {label for label, rows in out[s].items() if rows} for s in SPLITS}
    if data_cfg.get("disjoint_labels"):  # speakers: every split has its own
        if data_cfg.get("n_classes"):
            raise RecipeError("data.n_classes picks a pool of categories shared by the splits; with "
                              "data.disjoint_labels (speakers) it does not apply: set it to null")
        return {s: {label: out[s][label] for label in sorted(labels[s])} for s in SPLITS}
    common = set.intersection(*labels.values())
    missing = {s: sorted(set(out[s]) - labels[s]) for s in SPLITS if set(out[s]) - labels[s]}
    if missing and not data_cfg.get("drop_small_categories"):
        raise RecipeError(
            f"every split must have files of every category; without files: {missing}. Add files, change "
            f"data.file_selection_range, or set data.drop_small_categories true to leave those categories out."
        )
    if missing:
        dropped = sorted(set(sources["label"]) - common)
        print(f"stage 1: leaving out {len(dropped)} categories without files in every split: {', '.join(dropped)}")
    pool = class_pool(sorted(common), data_cfg.get("n_classes"), int(data_cfg["view_seed"]))
    return {s: {label: out[s][label] for label in pool} for s in SPLITS}


def class_pool(labels, n_classes, seed):
    """The first `n_classes` of `labels` in an order seeded by `seed` alone, so that a smaller pool is inside a
    larger one (WildMix's 5 in 10 in 30 classes); every label, sorted, when n_classes is null."""
    if not n_classes:
        return list(labels)
    if n_classes > len(labels):
        raise RecipeError(f"data.n_classes = {n_classes} but the dataset has {len(labels)} categories with files in "
                          f"every split; choose at most {len(labels)}")
    order = [labels[i] for i in seeding.stream("class_pool", seed).permutation(len(labels))]
    return sorted(order[:n_classes])


def check_enough_labels(candidates, n_src):
    labels = sorted(candidates)
    if n_src > len(labels):
        raise RecipeError(
            f"data.n_src = {n_src} but the dataset has only {len(labels)} categories ({', '.join(labels)}); "
            f"lower n_src or add categories"
        )
    return labels


def placement(n_file_at_mix_rate, length, sample_rate, policy, rng):
    """(segment length, onset) of a source in its mixture, in mixture samples, under a mixing policy."""
    if policy == "t0":  # the file's length (at most the mixture's) at a random onset
        seg_len = min(n_file_at_mix_rate, length)
        return seg_len, int(rng.integers(0, length - seg_len + 1))
    min_len = min(int(sample_rate), length)  # 1 s, or the whole of a shorter mixture
    if policy == "t1":  # from a random onset to the mixture's end (or the file's)
        onset = int(rng.integers(0, length - min_len + 1))
        return min(n_file_at_mix_rate, length - onset), onset
    if policy == "t2":  # a random duration of 1 s to the whole mixture, at a random onset
        duration = int(rng.integers(min_len, length + 1))
        onset = int(rng.integers(0, length - duration + 1))
        return min(n_file_at_mix_rate, duration), onset
    raise RecipeError(f"data.mixing_policy must be t0, t1 or t2, got {policy!r}")


def _valid_onsets(together, mask, min_samples):
    """Onsets o at which a source with activity `mask` overlaps `together` (where every source placed so far
    sounds) for at least `min_samples`: a cross-correlation of the two masks over every onset."""
    from scipy.signal import fftconvolve

    overlap = fftconvolve(together.astype(float), mask[::-1].astype(float), mode="valid")
    return np.flatnonzero(overlap >= min_samples - 0.5)


def _draw_source(src, length, sample_rate, policy, rng, root, together, min_samples, cache=None):
    """(segment start, end, onset, level dB, active mask in the mixture) of one file, or None when this draw
    is silent, too short to overlap, or finds no placement that overlaps the sources placed so far."""
    file_sr, n_file = int(src["sample_rate"]), int(src["num_samples"])
    n_at_mix_rate = int(n_file * sample_rate // file_sr)
    seg_len, onset = placement(n_at_mix_rate, length, sample_rate, policy, rng)
    seg_native = max(1, min(n_file, int(round(seg_len * file_sr / sample_rate))))
    start = int(rng.integers(0, n_file - seg_native + 1))
    audio = read_segment(Path(root) / src["path"], start, start + seg_native, sample_rate, cache=cache).numpy()
    if activity.rms_db(audio) <= SILENCE_DB:
        return None
    mask = activity.active_mask(audio, sample_rate)[: length]
    if not mask.any():
        return None
    if together is not None and min_samples > 0:
        # a sound shorter than min_overlap must sound entirely within the others (and they within it)
        need = min(min_samples, int(mask.sum()), int(together.sum()))
        if policy == "t0":  # uniform over the onsets that overlap: what rejection of uniform onsets would give
            onsets = _valid_onsets(together, mask, need)
            if not len(onsets):
                return None
            onset = int(onsets[rng.integers(len(onsets))])
        elif (together[onset : onset + len(mask)] & mask[: length - onset]).sum() < need:
            return None
    placed = np.zeros(length, dtype=bool)
    placed[onset : onset + len(mask)] = mask[: length - onset]
    return start, start + seg_native, onset, activity.active_level_db(audio, sample_rate), placed


def draw_view(candidates, labels, root, n_src, length, sample_rate, level_db_range, rng, mixture_id, policy="t0",
              min_overlap=0.0, cache=None):
    """One view row: n_src distinct labels, a file of each, a segment, a placement and a gain, from `rng`.

    The gain sets the source's active level (local/data/activity.py), measured on the segment as the loader
    returns it, to a level drawn from `level_db_range`. With `min_overlap` > 0 s, each source after the first
    is placed where it sounds together with all those before it for at least that long, or, where it or they
    sound for less, for all of that shorter time (a 0.2 s hit lies wholly inside the others); a draw that
    cannot (silent, no such onset) is redrawn, then the whole mixture, and never dropped.
    Returns (row, overlap in seconds)."""
    min_samples = int(round(float(min_overlap) * sample_rate))
    for _ in range(MAX_REDRAWS):
        row = {"mixture_id": mixture_id, "length": length, "sample_rate": sample_rate}
        chosen = np.sort(rng.choice(len(labels), size=n_src, replace=False))  # sources in category order
        together = None
        for i, label_index in enumerate(chosen):
            label = labels[label_index]
            for _ in range(MAX_REDRAWS):
                src = candidates[label][rng.integers(len(candidates[label]))]
                drawn = _draw_source(src, length, sample_rate, policy, rng, root, together, min_samples, cache)
                if drawn is not None:
                    break
            else:
                break  # this category found no placement next to the others: draw the mixture again
            start, end, onset, level, placed = drawn
            together = placed if together is None else together & placed
            target = rng.uniform(*level_db_range)
            row.update({f"path_{i}": src["path"], f"label_{i}": label, f"start_{i}": start, f"end_{i}": end,
                        f"mix_start_{i}": onset, f"gain_db_{i}": round(float(target - level), 4)})
        else:
            return row, int(together.sum()) / sample_rate
    raise RecipeError(
        f"{mixture_id}: {MAX_REDRAWS} draws in a row found no segments that are not silent (> {SILENCE_DB} dBFS at "
        f"{sample_rate} Hz) and sound together for data.min_overlap = {min_overlap} s (last category '{label}', file "
        f"{src['path']}); lower data.min_overlap or check that category's files"
    )


def make_split_views(candidates, root, n_src, length, sample_rate, n_mixtures, level_db_range, rng, split,
                     policy="t0", min_overlap=0.0, cache=None):
    """Draw `n_mixtures` rows (`draw_view`) from one random stream: (DataFrame, overlap of each view in seconds)."""
    labels = check_enough_labels(candidates, n_src)
    drawn = [draw_view(candidates, labels, root, n_src, length, sample_rate, level_db_range, rng, f"{split}_{m:06d}",
                       policy, min_overlap, cache) for m in range(n_mixtures)]
    return pd.DataFrame([row for row, _ in drawn], columns=view_columns(n_src)), [o for _, o in drawn]


def fill_cache(data_dir, sources, root, sample_rate):
    """The dataset's source cache with every file that needs one built (local/data/source_cache.py)."""
    cache = SourceCache(Path(data_dir) / "cache", sample_rate)
    cache.fill(sorted({Path(root) / path for path in sources["path"]}),
               announce=lambda line: print(f"stage 1: {line}", flush=True))
    return cache


def make_views(data_cfg, data_dir, announce_skip=True):
    """Write data_dir/<n>src/{train,val,test}.csv (skipped when identical views exist)."""
    data_dir = Path(data_dir)
    sources, root = load_sources(data_dir)
    fixed = fixes_splits(sources)
    if fixed and data_cfg.get("file_selection_range"):
        print(f"stage 1: {data_dir}/sources.csv fixes the train/val/test split of every file; "
              f"data.file_selection_range is ignored (every file of a split is used)", flush=True)
    settings = view_settings(data_cfg, data_dir / "sources.csv", fixed)
    out_dir = views_dir(data_dir, settings["n_src"], settings["n_classes"], data_cfg.get("mixing_policy", "t0"))
    meta_path = out_dir / "views.yml"
    if meta_path.is_file():
        done = yaml.safe_load(meta_path.read_text())
        done = done if isinstance(done, dict) else {}
        done.pop(STATS_KEY, None)
        if isinstance(done.get("format_version"), int) and done["format_version"] > VIEWS_FORMAT:
            raise RecipeError(f"{out_dir} was made by a newer version of listener (views.yml format "
                              f"{done['format_version']}, this one writes {VIEWS_FORMAT}): update this checkout "
                              f"(git pull), or use another --dataset name")
        if done.get("format_version") != VIEWS_FORMAT:
            raise RecipeError(f"{out_dir} was made by an older version of listener (views.yml format "
                              f"{done.get('format_version', 1)}, this one writes {VIEWS_FORMAT}): delete {out_dir} "
                              f"and re-run stage 1")
        if done == settings and all((out_dir / f"{s}.csv").is_file() for s in SPLITS):
            if dataset_format(data_dir) not in SCP_FORMATS:  # the cache may have been deleted: build it here,
                fill_cache(data_dir, sources, root, settings["sample_rate"])  # not in every loader worker at once
            if announce_skip:
                print(f"stage 1: views in {out_dir} are up to date; skipped", flush=True)
            return out_dir
        if done != settings:
            changed = [k for k in settings if done.get(k) != settings[k]]
            raise RecipeError(
                f"{out_dir} holds views made with other settings (differs in: {', '.join(changed)}). "
                f"Delete {out_dir} to rebuild them, or keep both by using another --dataset name."
            )
    if dataset_format(data_dir) in SCP_FORMATS:
        if settings["n_classes"] or settings["mixing_policy"] != "t0":
            raise RecipeError("data.n_classes and data.mixing_policy draw category mixtures; the wsj0-2mix / LibriMix "
                              "lists fix their mixtures: leave them at null and t0")
        for split, df in scp_views(data_dir, data_cfg, settings).items():
            io_utils.write_csv(df, out_dir / f"{split}.csv")
            print(f"stage 1: wrote {out_dir / split}.csv: {len(df)} mixtures from the {split} scp files", flush=True)
        io_utils.write_yaml(settings, meta_path)
        return out_dir
    sample_rate = settings["sample_rate"]
    length = int(round(settings["mixture_seconds"] * sample_rate))
    candidates = split_candidates(sources, data_cfg)
    cache = fill_cache(data_dir, sources, root, sample_rate)
    shares = {}
    for split_index, split in enumerate(SPLITS):
        rng = seeding.stream("views", settings["view_seed"], split_index, settings["n_src"])
        df, overlaps = make_split_views(candidates[split], root, settings["n_src"], length, sample_rate,
                                        settings["n_mixtures"][split], settings["level_db_range"], rng, split,
                                        data_cfg.get("mixing_policy", "t0"), settings["min_overlap"], cache)
        io_utils.write_csv(df, out_dir / f"{split}.csv")
        shares[split] = activity.overlap_shares(overlaps)
        print(f"stage 1: wrote {out_dir / split}.csv: {len(df)} mixtures of {settings['n_src']} sources "
              f"from {sum(map(len, candidates[split].values()))} files; sources sound together for a median "
              f"{np.median(overlaps):.2f} s (none in {shares[split]['none']:.0%})", flush=True)
    io_utils.write_yaml({**settings, STATS_KEY: shares}, meta_path)
    return out_dir

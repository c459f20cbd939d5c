"""Stage 0: list the source files of a dataset in `data/<dataset>/sources.csv`.

One row per source file: `path` (relative to the dataset root), `label` (category), `split` (empty when
the dataset does not fix one: stage 1 then splits each category by `file_selection_range`), `duration`
(seconds), `sample_rate`, `num_samples`. `data/<dataset>/dataset.yml` records where the root is and how
the listing was made, so that a second run with other settings is refused instead of silently mixed.

Formats:
  synth   the embedded synthetic categories (local/synth_sounds.py), generated deterministically from
          `data.synth.seed` into data/<dataset>/wav/<category>/*.wav
  folder  a user's folder of category folders: <source_dir>/<category>/*.wav (also .flac, .ogg)
"""
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
import yaml

from local import io_utils
from local.errors import RecipeError
from local.synth_sounds import CATEGORIES, render

SOURCES_COLUMNS = ["path", "label", "split", "duration", "sample_rate", "num_samples"]
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg"}
SPLITS = ("train", "val", "test")
MIN_FILES_PER_CATEGORY = len(SPLITS)


def resolve_format(data_cfg):
    fmt = data_cfg["format"]
    if fmt == "auto":
        fmt = "folder" if data_cfg.get("source_dir") else "synth"
    if fmt not in FORMATS:
        raise RecipeError(f"unknown data.format '{fmt}'; known: auto, {', '.join(FORMATS)}")
    if fmt != "synth" and not data_cfg.get("source_dir"):
        raise RecipeError(f"data.format '{fmt}' reads a dataset on disk: pass --data_dir DIR (data.source_dir)")
    return fmt


def audio_info(path):
    """(sample_rate, frames) of an audio file, or a RecipeError naming it when it is unreadable or empty."""
    try:
        info = sf.info(str(path))
    except Exception as err:  # soundfile raises several types for broken files
        raise RecipeError(f"cannot read audio file {path}: {err}. Remove or replace it.") from None
    if info.frames == 0:
        raise RecipeError(f"audio file {path} is empty (0 samples). Remove or replace it.")
    return info.samplerate, info.frames


def synth_sources(out_dir, data_cfg):
    """Generate the synthetic categories as 16-bit wav files; return their sources.csv rows."""
    sr = int(data_cfg["sample_rate"])
    syn = data_cfg["synth"]
    if syn["clips_per_category"] < MIN_FILES_PER_CATEGORY:
        raise RecipeError(f"data.synth.clips_per_category must be at least {MIN_FILES_PER_CATEGORY} (one file per split)")
    rows = []
    total = len(CATEGORIES) * syn["clips_per_category"]
    for cat_index, label in enumerate(CATEGORIES):
        for clip in range(syn["clips_per_category"]):
            rng = np.random.default_rng([syn["seed"], cat_index, clip])
            seconds = rng.uniform(syn["min_seconds"], syn["max_seconds"])
            audio = render(label, rng, sr, seconds)
            rel = f"wav/{label}/{label}_{clip:03d}.wav"
            io_utils.write_wav(out_dir / rel, audio, sr, subtype="PCM_16")
            rows.append([rel, label, "", len(audio) / sr, sr, len(audio)])
        print(f"  synth: {label:<12} {syn['clips_per_category']} clips ({len(rows)}/{total})", flush=True)
    return rows


def folder_sources(source_dir):
    """List <source_dir>/<category>/*.{wav,flac,ogg}, checking every file is readable and non-empty."""
    source_dir = Path(source_dir)
    if not source_dir.is_dir():
        raise RecipeError(f"--data_dir {source_dir} does not exist or is not a directory")
    categories = sorted(p for p in source_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not categories:
        raise RecipeError(f"--data_dir {source_dir} has no category folders; expected {source_dir}/<category>/*.wav")
    rows = []
    for cat_dir in categories:
        files = sorted(p for p in cat_dir.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
        if len(files) < MIN_FILES_PER_CATEGORY:
            raise RecipeError(
                f"category folder {cat_dir} has {len(files)} audio file(s); each category needs at least "
                f"{MIN_FILES_PER_CATEGORY} (train, val and test draw disjoint files). Add files or remove the folder."
            )
        for path in files:
            sr, frames = audio_info(path)
            rows.append([str(path.relative_to(source_dir)), cat_dir.name, "", frames / sr, sr, frames])
        print(f"  folder: {cat_dir.name:<20} {len(files)} files", flush=True)
    return rows


FORMATS = ("synth", "folder")


def prep_settings(data_cfg, fmt):
    """What the listing depends on: a later run with different values must not reuse it."""
    settings = {"format": fmt}
    if fmt == "synth":
        settings.update(sample_rate=int(data_cfg["sample_rate"]), synth=dict(data_cfg["synth"]),
                        categories=list(CATEGORIES))
    else:
        settings["source_dir"] = str(Path(data_cfg["source_dir"]).resolve())
    return settings


def prepare(data_cfg, data_dir):
    """Write data_dir/sources.csv and data_dir/dataset.yml unless an identical listing is already there."""
    data_dir = Path(data_dir)
    fmt = resolve_format(data_cfg)
    settings = prep_settings(data_cfg, fmt)
    meta_path, csv_path = data_dir / "dataset.yml", data_dir / "sources.csv"
    if meta_path.is_file() and csv_path.is_file():
        done = yaml.safe_load(meta_path.read_text())
        if done.get("settings") == settings:
            print(f"stage 0: {csv_path} is up to date ({done.get('n_files')} files); skipped", flush=True)
            return
        raise RecipeError(
            f"{data_dir} was prepared with other settings ({done.get('settings')}); now asked for {settings}. "
            f"Use another --dataset name, or delete {data_dir} to rebuild it."
        )
    if fmt == "synth":
        rows, root = synth_sources(data_dir, data_cfg), "."
    else:
        rows, root = folder_sources(data_cfg["source_dir"]), settings["source_dir"]
    df = pd.DataFrame(rows, columns=SOURCES_COLUMNS)
    io_utils.write_csv(df, csv_path)
    counts = df.groupby("label").size().to_dict()
    io_utils.write_yaml({"settings": settings, "root": root, "n_files": len(df), "files_per_label": counts}, meta_path)
    print(f"stage 0: wrote {csv_path}: {len(df)} files in {len(counts)} categories", flush=True)


def load_sources(data_dir):
    """(sources DataFrame, absolute dataset root) of a prepared dataset, or a clear error if stage 0 has not run."""
    data_dir = Path(data_dir)
    meta_path, csv_path = data_dir / "dataset.yml", data_dir / "sources.csv"
    if not (meta_path.is_file() and csv_path.is_file()):
        raise RecipeError(f"{csv_path} not found: run stage 0 first (./run.sh --stage 0 --stop_stage 0)")
    meta = yaml.safe_load(meta_path.read_text())
    df = pd.read_csv(csv_path, keep_default_na=False)
    missing = [c for c in SOURCES_COLUMNS if c not in df.columns]
    if missing:
        raise RecipeError(f"{csv_path} lacks column(s) {', '.join(missing)}; re-run stage 0")
    return df, dataset_root(data_dir, meta)


def dataset_root(data_dir, meta):
    root = Path(meta["root"])
    return root if root.is_absolute() else (Path(data_dir) / root).resolve()

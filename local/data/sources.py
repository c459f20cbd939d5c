"""The `sources.csv` contract: one row per source file of a prepared dataset, and how to read it back.

Stage 0 (local/data/prepare.py) writes `data/<dataset>/sources.csv` and `dataset.yml`; stage 1 and the
scp lists read them through `load_sources`. Kept apart from stage 0 so that the readers do not import
the writers (that was the prepare -> scp -> views -> prepare import cycle).
"""
from pathlib import Path

import pandas as pd
import soundfile as sf
import yaml

from local.common.errors import RecipeError

SOURCES_COLUMNS = ["path", "label", "split", "duration", "sample_rate", "num_samples"]
SPLITS = ("train", "val", "test")
MIN_FILES_PER_CATEGORY = len(SPLITS)


def audio_info(path):
    """(sample_rate, frames) of an audio file, or a RecipeError naming it when it is unreadable or empty."""
    try:
        info = sf.info(str(path))
    except Exception as err:  # soundfile raises several types for broken files
        raise RecipeError(f"cannot read audio file {path}: {err}. Remove or replace it.") from None
    if info.frames == 0:
        raise RecipeError(f"audio file {path} is empty (0 samples). Remove or replace it.")
    return info.samplerate, info.frames


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


def dataset_format(data_dir):
    meta = yaml.safe_load((Path(data_dir) / "dataset.yml").read_text())
    return meta["settings"]["format"]


def dataset_root(data_dir, meta):
    root = Path(meta["root"])
    return root if root.is_absolute() else (Path(data_dir) / root).resolve()

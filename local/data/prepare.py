"""Stage 0: list the source files of a dataset in `data/<dataset>/sources.csv`.

One row per source file: `path` (relative to the dataset root), `label` (category), `split` (empty when
the dataset does not fix one: stage 1 then splits each category by `file_selection_range`), `duration`
(seconds), `sample_rate`, `num_samples`. `data/<dataset>/dataset.yml` records where the root is and how
the listing was made, so that a second run with other settings is refused instead of silently mixed.

Formats:
  synth   the embedded synthetic categories (local/data/synth_sounds.py), generated deterministically from
          `data.synth.seed` into data/<dataset>/wav/<category>/*.wav
  synth_speakers  procedurally generated voiced speech (local/data/synth_speech.py), generated
          deterministically into data/<dataset>/wav/<speaker>/*.wav; the label is the speaker, and
          train, val and test have disjoint speakers, as in wsj0-2mix
  folder  a user's folder of category folders: <source_dir>/<category>/*.wav (and every other format this
          libsndfile reads: .flac, .ogg/.oga/.opus, .mp3, .aiff, ...); other files are named and skipped
  esc50   ESC-50 (Piczak 2015): <source_dir>/meta/esc50.csv (filename, fold, target, category, esc10,
          src_file, take) and <source_dir>/audio/<filename>; the folds make the splits (`data.folds`)
  fsdkaggle2018  FSDKaggle2018 (Fonseca et al. 2018): the train audio folder and its metadata CSV
          (fname, label, manually_verified, freesound_id, license); only manually verified clips are
          kept, and each category is split by `data.file_selection_range` (the study: train [0, 40),
          val [40, 50), test [50, 60))
  listing a CSV listing: <source_dir>/listing.csv with `path` (relative to source_dir), `label` and `split`
          (train, val or test; or empty in every row, then `file_selection_range` splits each label); other
          columns (source, license, ...) are kept in the listing and ignored here
  debian_sounds, debian_speech, debian_all  real recordings from Debian packages of sample libraries and voice
          prompts (debian_all: both, plus the synthetic categories, for pretraining): stage 0 fetches and unpacks
          them into source_dir and lists them (local/data/debian_packages.py), then reads that listing
"""
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
import yaml

from local.common import io_utils
from local.common.errors import RecipeError
from local.data import debian_packages
from local.data.scp import SCP_FORMATS, scp_sources
from local.data.sources import MIN_FILES_PER_CATEGORY, SOURCES_COLUMNS, SPLITS, audio_info
from local.data.synth_sounds import CATEGORIES, render
from local.data.synth_speech import speaker_params, utterance
from local.common import seeding

# File suffixes read as audio: every container this libsndfile reads (MP3 from libsndfile 1.1 on).
_SUFFIXES_BY_FORMAT = {"WAV": [".wav"], "WAVEX": [".wav"], "FLAC": [".flac"], "OGG": [".ogg", ".oga", ".opus"],
                       "MP3": [".mp3"], "AIFF": [".aif", ".aiff", ".aifc"], "AU": [".au", ".snd"], "W64": [".w64"],
                       "CAF": [".caf"], "RF64": [".rf64"]}
AUDIO_SUFFIXES = {suffix for fmt in sf.available_formats() for suffix in _SUFFIXES_BY_FORMAT.get(fmt, [])}


def resolve_format(data_cfg):
    fmt = data_cfg["format"]
    if fmt == "auto":
        fmt = "folder" if data_cfg.get("source_dir") else "synth"
    if fmt not in FORMATS:
        raise RecipeError(f"unknown data.format '{fmt}'; known: auto, {', '.join(FORMATS)}")
    if fmt not in GENERATED and not data_cfg.get("source_dir"):
        raise RecipeError(f"data.format '{fmt}' reads a dataset on disk: pass --data_dir DIR (data.source_dir)")
    return fmt


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
            rng = seeding.stream("synth_sounds", syn["seed"], cat_index, clip)
            seconds = rng.uniform(syn["min_seconds"], syn["max_seconds"])
            audio = render(label, rng, sr, seconds)
            rel = f"wav/{label}/{label}_{clip:03d}.wav"
            io_utils.write_wav(out_dir / rel, audio, sr, subtype="PCM_16")
            rows.append([rel, label, "", len(audio) / sr, sr, len(audio)])
        print(f"  synth: {label:<12} {syn['clips_per_category']} clips ({len(rows)}/{total})", flush=True)
    return rows


def synth_speaker_sources(out_dir, data_cfg):
    """Generate the synthetic speakers' utterances; return their sources.csv rows (split by speaker)."""
    sr = int(data_cfg["sample_rate"])
    cfg = data_cfg["synth_speakers"]
    rows, speaker = [], 0
    for split in SPLITS:
        for _ in range(int(cfg["speakers"][split])):
            params = speaker_params(seeding.stream("synth_speaker", cfg["seed"], speaker))
            label = f"spk{speaker:03d}"
            for utt in range(int(cfg["utterances_per_speaker"])):
                rng = seeding.stream("synth_utterance", cfg["seed"], speaker, utt)
                audio = utterance(rng, params, sr, rng.uniform(cfg["min_seconds"], cfg["max_seconds"]))
                rel = f"wav/{label}/{label}_{utt:03d}.wav"
                io_utils.write_wav(out_dir / rel, audio, sr, subtype="PCM_16")
                rows.append([rel, label, split, len(audio) / sr, sr, len(audio)])
            speaker += 1
        print(f"  synth_speakers: {cfg['speakers'][split]} {split} speakers, {cfg['utterances_per_speaker']} "
              f"utterances each", flush=True)
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
        listed = sorted(p for p in cat_dir.rglob("*") if p.is_file() and not p.name.startswith("."))
        files = [p for p in listed if p.suffix.lower() in AUDIO_SUFFIXES]
        skipped = [p for p in listed if p.suffix.lower() not in AUDIO_SUFFIXES]
        if skipped:
            print(f"  folder: {cat_dir.name}: skipped {len(skipped)} file(s) that are not audio this soundfile reads "
                  f"({', '.join(sorted({p.suffix or '(no suffix)' for p in skipped}))}): "
                  f"{', '.join(str(p.relative_to(source_dir)) for p in skipped[:5])}"
                  f"{' ...' if len(skipped) > 5 else ''}", flush=True)
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


ESC50_COLUMNS = ["filename", "fold", "target", "category", "esc10", "src_file", "take"]
FSD_COLUMNS = ["fname", "label", "manually_verified", "freesound_id", "license"]
FSD_META = ["FSDKaggle2018.meta/train_post_competition.csv", "meta/train_post_competition.csv",
            "train_post_competition.csv", "train.csv"]
FSD_AUDIO = ["FSDKaggle2018.audio_train", "audio_train", "train"]


def read_metadata(path, columns):
    """A dataset's metadata CSV, with a clear error for a missing file or column."""
    if not Path(path).is_file():
        raise RecipeError(f"metadata file {path} not found: is --data_dir the dataset's top folder?")
    df = pd.read_csv(path, keep_default_na=False)
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise RecipeError(f"{path} lacks column(s) {', '.join(missing)}; expected {', '.join(columns)}")
    return df


def _listed_rows(source_dir, audio_dir, entries):
    """sources.csv rows for (file name, label, split) entries under audio_dir, checking every file."""
    rows = []
    for i, (name, label, split) in enumerate(entries):
        path = Path(audio_dir) / name
        if not path.is_file():
            raise RecipeError(f"{path} is listed in the metadata but missing; restore the dataset or remove the row")
        sr, frames = audio_info(path)
        rows.append([str(path.relative_to(source_dir)), label, split, frames / sr, sr, frames])
        if (i + 1) % 500 == 0:
            print(f"  checked {i + 1}/{len(entries)} files", flush=True)
    return rows


def esc50_sources(source_dir, data_cfg):
    source_dir = Path(source_dir)
    meta = read_metadata(source_dir / "meta" / "esc50.csv", ESC50_COLUMNS)
    fold_split = {}
    for split, folds in (data_cfg.get("folds") or {}).items():
        if split not in SPLITS:
            raise RecipeError(f"data.folds has an unknown split '{split}'; splits are {', '.join(SPLITS)}")
        for fold in folds:
            if fold in fold_split:
                raise RecipeError(f"data.folds puts fold {fold} in both {fold_split[fold]} and {split}")
            fold_split[int(fold)] = split
    if set(fold_split.values()) != set(SPLITS):
        raise RecipeError(f"data.folds must give folds for each of {', '.join(SPLITS)}; got {data_cfg.get('folds')}")
    meta = meta[meta["fold"].astype(int).isin(fold_split)]
    entries = [(r.filename, r.category, fold_split[int(r.fold)]) for r in meta.itertuples()]
    rows = _listed_rows(source_dir, source_dir / "audio", entries)
    print(f"  esc50: {len(rows)} clips in {meta['category'].nunique()} categories", flush=True)
    return rows


def _first_existing(source_dir, candidates, what):
    for rel in candidates:
        if (Path(source_dir) / rel).exists():
            return Path(source_dir) / rel
    raise RecipeError(f"{source_dir} has no {what}; looked for {', '.join(candidates)}")


def fsdkaggle2018_sources(source_dir):
    source_dir = Path(source_dir)
    meta = read_metadata(_first_existing(source_dir, FSD_META, "FSDKaggle2018 train metadata CSV"), FSD_COLUMNS)
    audio_dir = _first_existing(source_dir, FSD_AUDIO, "FSDKaggle2018 train audio folder")
    verified = meta[meta["manually_verified"].astype(int) == 1]
    entries = [(r.fname, r.label, "") for r in verified.itertuples()]
    rows = _listed_rows(source_dir, audio_dir, entries)
    print(f"  fsdkaggle2018: {len(rows)} manually verified clips of {len(meta)} in "
          f"{verified['label'].nunique()} categories", flush=True)
    return rows


LISTING_COLUMNS = ["path", "label", "split"]


def listing_sources(source_dir):
    """Rows of <source_dir>/listing.csv, checking each split value and each file."""
    source_dir = Path(source_dir)
    path = source_dir / "listing.csv"
    listing = read_metadata(path, LISTING_COLUMNS)
    bad = listing[~listing["split"].astype(str).isin(("",) + SPLITS)]
    if len(bad):
        row = bad.index[0]
        raise RecipeError(f"{path} row {row + 2}: split {bad['split'].iloc[0]!r}; a split is train, val, test or empty")
    entries = [(r.path, str(r.label), str(r.split)) for r in listing.itertuples()]
    rows = _listed_rows(source_dir, source_dir, entries)
    print(f"  listing: {len(rows)} files with {listing['label'].nunique()} labels", flush=True)
    return rows


DEBIAN_FORMATS = {"debian_sounds": "sounds", "debian_speech": "speech", "debian_all": "all"}
GENERATED = ("synth", "synth_speakers")
FORMATS = GENERATED + ("folder", "esc50", "fsdkaggle2018", "listing") + tuple(DEBIAN_FORMATS) + SCP_FORMATS


def prep_settings(data_cfg, fmt):
    """What the listing depends on: a later run with different values must not reuse it."""
    settings = {"format": fmt}
    if fmt == "synth":
        settings.update(sample_rate=int(data_cfg["sample_rate"]), synth=dict(data_cfg["synth"]),
                        categories=list(CATEGORIES))
    elif fmt == "synth_speakers":
        settings.update(sample_rate=int(data_cfg["sample_rate"]), synth_speakers=dict(data_cfg["synth_speakers"]))
    else:
        settings["source_dir"] = str(Path(data_cfg["source_dir"]).resolve())
    if fmt == "esc50":
        settings["folds"] = data_cfg.get("folds")
    if fmt in SCP_FORMATS:
        settings.update(mix_variant=data_cfg.get("mix_variant"), librimix_train=data_cfg.get("librimix_train"))
    listing = Path(settings.get("source_dir", "")) / "listing.csv"
    if fmt == "listing" and listing.is_file():  # the listing is the dataset: an edited one is another dataset
        import hashlib

        settings["listing_sha256"] = hashlib.sha256(listing.read_bytes()).hexdigest()
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
    elif fmt == "synth_speakers":
        rows, root = synth_speaker_sources(data_dir, data_cfg), "."
    else:
        root = settings["source_dir"]
        if fmt in DEBIAN_FORMATS:  # fetched here: the folder is made
            Path(root).mkdir(parents=True, exist_ok=True)
            debian_packages.build(root, DEBIAN_FORMATS[fmt])
        if not Path(root).is_dir():
            raise RecipeError(f"--data_dir {root} does not exist or is not a directory")
        if fmt == "folder":
            rows = folder_sources(root)
        elif fmt == "esc50":
            rows = esc50_sources(root, data_cfg)
        elif fmt in SCP_FORMATS:
            rows = scp_sources(root, data_dir, fmt, data_cfg)
        elif fmt == "listing" or fmt in DEBIAN_FORMATS:
            rows = listing_sources(root)
        else:
            rows = fsdkaggle2018_sources(root)
    df = pd.DataFrame(rows, columns=SOURCES_COLUMNS)
    io_utils.write_csv(df, csv_path)
    counts = df.groupby("label").size().to_dict()
    io_utils.write_yaml({"settings": settings, "root": root, "n_files": len(df), "files_per_label": counts}, meta_path)
    print(f"stage 0: wrote {csv_path}: {len(df)} files with {len(counts)} labels", flush=True)

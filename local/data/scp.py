"""Datasets of precomputed mixtures (wsj0-2mix, LibriMix), listed in Kaldi-style scp files.

Stage 0 finds the dataset's split folders, each with a mixture folder and one folder per source
(`mix`, `s1`, `s2` for wsj0-2mix; `mix_clean`, `s1`, `s2` for LibriMix), and writes
data/<dataset>/<split>_mix.scp, <split>_s1.scp, ... with one `<key> <path>` line per utterance, keys
joined across the files, in the format the earlier DPCL-DPRNN tools read. It checks that every key
has every file and that their lengths and sample rates agree.

Stage 1 turns them into ordinary view CSVs (the sources of a mixture are s1..sN at full level, so
the mixture is their sum, as these datasets define it): train and validation views are windows of
`data.segment_seconds` at a seeded random offset (shorter utterances are left out, and counted),
test views are whole utterances. Training, evaluation and separation then work as for any dataset.
"""
from pathlib import Path

import numpy as np
import pandas as pd

from local.common import io_utils
from local.common.errors import RecipeError
from local.data.sources import audio_info, load_sources
from local.data.view_csv import view_columns
from local.common import seeding

# dataset format -> {our split: the dataset's folder name}, the mixture folder, and where the split
# folders may sit below --data_dir (tried in order).
LAYOUTS = {
    "wsj0-2mix": {"splits": {"train": "tr", "val": "cv", "test": "tt"}, "mix": "mix",
                  "parents": ["", "{variant}", "2speakers/{variant}"]},
    "librimix": {"splits": {"train": "{librimix_train}", "val": "dev", "test": "test"}, "mix": "mix_clean",
                 "parents": ["", "{variant}", "Libri2Mix/{variant}"]},
}
SCP_FORMATS = tuple(LAYOUTS)


def read_scp(path):
    """{key: path} of a `<key> <path>` file, refusing duplicate keys and malformed lines."""
    entries = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2:
            raise RecipeError(f"{path} line {number}: expected '<key> <path>', got {line!r}")
        if parts[0] in entries:
            raise RecipeError(f"{path} line {number}: duplicate key {parts[0]}")
        entries[parts[0]] = parts[1].strip()
    return entries


def write_scp(entries, path):
    io_utils.write_text(path, "".join(f"{key} {value}\n" for key, value in sorted(entries.items())))


def _split_dirs(source_dir, fmt, data_cfg):
    layout = LAYOUTS[fmt]
    names = {s: n.format(librimix_train=data_cfg.get("librimix_train", "train-100")) for s, n in layout["splits"].items()}
    tried = []
    for parent in layout["parents"]:
        base = Path(source_dir) / parent.format(variant=data_cfg.get("mix_variant", "wav8k/min"))
        tried.append(str(base))
        if all((base / name).is_dir() for name in names.values()):
            return {s: base / n for s, n in names.items()}
    raise RecipeError(f"--data_dir {source_dir} is not a {fmt} folder: expected {', '.join(names.values())} "
                      f"below one of {', '.join(tried)} (data.mix_variant selects e.g. wav8k/min)")


def scp_sources(source_dir, out_dir, fmt, data_cfg):
    """Write the scp files of every split; return sources.csv rows (one per source file)."""
    source_dir, out_dir = Path(source_dir), Path(out_dir)
    mix_name = LAYOUTS[fmt]["mix"]
    rows = []
    for split, split_dir in _split_dirs(source_dir, fmt, data_cfg).items():
        if not (split_dir / mix_name).is_dir():
            raise RecipeError(f"{split_dir} has no {mix_name}/ folder")
        src_names = sorted(p.name for p in split_dir.iterdir() if p.is_dir() and p.name[:1] == "s" and p.name[1:].isdigit())
        if len(src_names) < 2:
            raise RecipeError(f"{split_dir} needs at least two source folders s1/, s2/; found {src_names}")
        folders = [mix_name] + src_names
        listed = {f: {p.name: p for p in sorted((split_dir / f).glob("*.wav"))} for f in folders}
        keys = set(listed[mix_name])
        if not keys:
            raise RecipeError(f"{split_dir / mix_name} has no wav files")
        for folder in src_names:
            missing, extra = keys - set(listed[folder]), set(listed[folder]) - keys
            if missing or extra:
                example = sorted(missing or extra)[0]
                raise RecipeError(f"{split_dir}: {len(missing)} mixture(s) lack a {folder} file and {len(extra)} {folder} "
                                  f"file(s) lack a mixture (e.g. {example}); every key needs {', '.join(folders)}")
        for key in sorted(keys):
            infos = {f: audio_info(listed[f][key]) for f in folders}
            if len(set(infos.values())) != 1:
                raise RecipeError(f"{split_dir}: {key} differs in length or sample rate across "
                                  f"{', '.join(f'{f}={sr} Hz/{n}' for f, (sr, n) in infos.items())}")
            sr, frames = infos[mix_name]
            for folder in src_names:
                rows.append([str(listed[folder][key].relative_to(source_dir)), folder, split, frames / sr, sr, frames])
        for folder in folders:
            suffix = "mix" if folder == mix_name else folder
            write_scp({k: str(listed[folder][k].resolve()) for k in keys}, out_dir / f"{split}_{suffix}.scp")
        print(f"  {fmt}: {split}: {len(keys)} mixtures of {len(src_names)} sources ({split_dir})", flush=True)
    return rows


def scp_views(data_dir, data_cfg, settings):
    """{split: view DataFrame} from the scp files: seeded windows for train/val, whole utterances for test."""
    data_dir = Path(data_dir)
    info, meta_root = load_sources(data_dir)
    info = info.set_index("path")
    sample_rate = settings["sample_rate"]
    segment = data_cfg.get("segment_seconds")
    out = {}
    for split_index, split in enumerate(("train", "val", "test")):
        sources = sorted(p.name[len(split) + 1 : -4] for p in data_dir.glob(f"{split}_s*.scp"))
        if not sources:
            raise RecipeError(f"no {split}_s1.scp in {data_dir}: re-run stage 0")
        if len(sources) != settings["n_src"]:
            raise RecipeError(f"{data_dir} has {len(sources)} sources per mixture, the config asks data.n_src = "
                              f"{settings['n_src']}")
        scps = [read_scp(data_dir / f"{split}_{s}.scp") for s in sources]
        rng = seeding.stream("scp_windows", settings["view_seed"], split_index)
        rows, dropped = [], 0
        for key in sorted(scps[0]):
            paths = [str(Path(scp[key]).relative_to(meta_root)) for scp in scps]  # scp paths are absolute
            native = int(info.loc[paths[0], "num_samples"])
            file_sr = int(info.loc[paths[0], "sample_rate"])
            full = native * sample_rate // file_sr
            if split != "test" and segment:
                length = int(round(segment * sample_rate))
                if full < length:
                    dropped += 1
                    continue
                seg_native = int(round(length * file_sr / sample_rate))
                start = int(rng.integers(0, native - seg_native + 1))
            else:
                length, seg_native, start = full, native, 0
            row = {"mixture_id": key[:-4] if key.endswith(".wav") else key, "length": length, "sample_rate": sample_rate}
            for i, (path, label) in enumerate(zip(paths, sources)):
                row.update({f"path_{i}": path, f"label_{i}": label, f"start_{i}": start, f"end_{i}": start + seg_native,
                            f"mix_start_{i}": 0, f"gain_db_{i}": 0.0})
            rows.append(row)
        if dropped:
            print(f"stage 1: {split}: left out {dropped} utterances shorter than data.segment_seconds = {segment}")
        out[split] = pd.DataFrame(rows, columns=view_columns(len(sources)))
    return out

"""The source cache: every source file that needs decoding or resampling, once, as mono float32 at the data rate.

Why: a view names a segment of an original file, so each epoch would decode it (ogg, mp3: seeking decodes from
the last page) and resample it (44.1-48 kHz to 8 kHz) again; on a folder of 44.1 kHz ogg files that made an
epoch of the default config about 1.6 times as long as one on synth (issue 20). The cache holds, for each such
file, the whole file downmixed and resampled to the data rate (`.npy`, read with a memory map, so a segment is
a partial read); no mixture is stored. WAV, FLAC and AIFF files already mono at the data rate are read directly
(a cache would copy them for nothing), so synthetic data and the wsj0-2mix lists never touch it.

Layout: `data/<dataset>/cache/<rate>Hz/<key>.npy`, where the key hashes the file's resolved path, size,
modification time and the rate, so a file that changes gets a new entry (the old one is unused; delete the
folder to reclaim it). Entries are written to a temporary file and renamed, so loader workers that build the
same entry at once, or a killed stage, never leave a half-written one.

A segment [start, end) in the file's own samples (the view CSV's) maps to cached samples
[round(start * rate / file_rate), + ceil((end - start) * rate / file_rate)): the length
`torchaudio.functional.resample` gives the segment itself. The cached samples come from resampling the whole
file, so they differ from resampling the segment alone only within the resampling filter's reach of the
segment's edges (a few ms; the whole-file version has no edge transient). Stage 1 measures levels, silence and
overlap through the same cache (local/data/audio.py), so what is measured is what the model hears.
"""
import hashlib
import math
import os
from collections import OrderedDict
from pathlib import Path

import numpy as np
import soundfile as sf

from local.common.errors import RecipeError

DIRECT_FORMATS = {"WAV", "FLAC", "AIFF", "W64", "RF64"}  # partial reads without decoding from a keyframe
CACHE_VERSION = 1  # part of every key: a change of how entries are made (or of torchaudio) makes new ones
OPEN_MAPS = 64  # memory maps kept open per process (each holds a file descriptor): the most recently used


def needs_cache(info, sample_rate):
    """True for a file (soundfile info) that is compressed, not mono, or not at `sample_rate`."""
    return info.samplerate != sample_rate or info.channels != 1 or info.format not in DIRECT_FORMATS


class SourceCache:
    """Cached, resampled copies of the source files of one dataset at one rate (see the module docstring)."""

    def __init__(self, cache_dir, sample_rate):
        self.sample_rate = int(sample_rate)
        self.dir = Path(cache_dir) / f"{self.sample_rate}Hz"
        self._arrays = OrderedDict()  # key -> memory map, per process (each loader worker opens its own), LRU
        self._info = {}  # path -> (stat text, key, file rate, frames, needs a cache)

    @classmethod
    def for_views(cls, csv_path, sample_rate):
        """The cache of the dataset a view CSV belongs to (data/<dataset>/<views>/<split>.csv), or None for a CSV
        outside a prepared dataset (benchmarks writing views to a temporary folder)."""
        data_dir = Path(csv_path).resolve().parent.parent
        return cls(data_dir / "cache", sample_rate) if (data_dir / "sources.csv").is_file() else None

    def _describe(self, path, where=""):
        """(key, file rate, frames, needs a cache) of `path`, looked up once per size and modification time."""
        import torchaudio

        try:
            stat = os.stat(path)
        except OSError as err:
            raise RecipeError(f"{where}cannot read {path}: {err.strerror}. The file moved or was deleted since "
                              f"stage 0: restore it, or re-run stages 0 and 1.") from None
        text = (f"{Path(path).resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{self.sample_rate}|v{CACHE_VERSION}|"
                f"torchaudio {torchaudio.__version__}")
        if self._info.get(path, (None,))[0] != text:
            try:
                info = sf.info(str(path))
            except Exception as err:
                raise RecipeError(f"cannot read {path}: {err}") from None
            key = hashlib.sha1(text.encode()).hexdigest()
            self._info[path] = (text, key, info.samplerate, info.frames, needs_cache(info, self.sample_rate))
        return self._info[path][1:]

    def entry(self, path):
        """The cached array of `path` (built now if missing or stale), as a read-only memory map."""
        key = self._describe(path)[0]
        if key in self._arrays:
            self._arrays.move_to_end(key)
            return self._arrays[key]
        target = self.dir / f"{key}.npy"
        if not target.is_file():
            self._build(path, target)
        try:
            data = np.load(target, mmap_mode="r")
        except (ValueError, OSError):  # a damaged entry (a disk that filled up outside the atomic rename): rebuild
            self._build(path, target)
            data = np.load(target, mmap_mode="r")
        self._arrays[key] = data
        while len(self._arrays) > OPEN_MAPS:
            self._arrays.popitem(last=False)
        return data

    def _build(self, path, target):
        import torch
        import torchaudio

        try:
            audio, file_sr = sf.read(str(path), dtype="float32", always_2d=True)
        except Exception as err:
            raise RecipeError(f"cannot read {path}: {err}") from None
        mono = torch.from_numpy(np.ascontiguousarray(audio.mean(axis=1)))
        if file_sr != self.sample_rate:
            mono = torchaudio.functional.resample(mono, file_sr, self.sample_rate)
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.stem}.{os.getpid()}.tmp.npy")
        np.save(tmp, mono.numpy().astype(np.float32))
        os.replace(tmp, target)

    def segment(self, path, start, end, where=""):
        """Samples [start, end) of `path` (in the file's own samples) at the cache's rate (float32, 1-D), or None
        for a file that is read directly (mono, uncompressed, at the rate)."""
        _, file_sr, frames, cached = self._describe(path, where)
        if not cached:
            return None
        if not 0 <= start < end <= frames:
            raise RecipeError(f"{where}segment [{start}, {end}) lies outside {path} ({frames} samples). "
                              f"The file changed since stage 1: re-run stage 1 (delete the view folder).")
        data = self.entry(path)
        first = int(round(start * self.sample_rate / file_sr))
        g = math.gcd(int(file_sr), self.sample_rate)
        length = -(-(end - start) * (self.sample_rate // g) // (int(file_sr) // g))  # torchaudio's output length
        out = np.zeros(length, dtype=np.float32)
        piece = data[first : first + length]
        out[: len(piece)] = piece
        return out

    def fill(self, paths, announce=None):
        """Build the entries of `paths` that need one (stage 1, with a progress line); returns how many were built."""
        todo = [p for p in paths if self._describe(p)[3] and not (self.dir / f"{self._describe(p)[0]}.npy").is_file()]
        for done, path in enumerate(todo, 1):
            self._build(path, self.dir / f"{self._describe(path)[0]}.npy")
            if announce and (done % 50 == 0 or done == len(todo)):
                announce(f"source cache: {done}/{len(todo)} files decoded and resampled to {self.sample_rate} Hz "
                         f"in {self.dir}")
        return len(todo)

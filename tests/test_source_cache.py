"""The source cache (local/data/source_cache.py): decoded and resampled once, read back as the file would be."""
import os

import numpy as np
import pandas as pd
import soundfile as sf
import torch
import torchaudio

from local.data.audio import read_segment
from local.data.dataset import ViewDataset
from local.data.source_cache import SourceCache
from local.data.view_csv import view_columns


def _stereo_44k(path, seed, seconds=1.5):
    rng = np.random.default_rng(seed)
    audio = 0.1 * rng.standard_normal((int(seconds * 44100), 2)).astype(np.float32)
    sf.write(str(path), audio, 44100, subtype="FLOAT")
    return audio


def test_a_cached_segment_is_the_resampled_segment_away_from_its_edges(tmp_path):
    """Same length as resampling the segment alone (written out here with torchaudio); the same samples as the
    segment alone except within the resampling filter's reach of its edges where the segment starts on the
    mixture rate's grid (start a multiple of 44100/8000 = 5.5125 samples: 441 k), and otherwise the resampled
    whole file from the nearest mixture sample (less than half a mixture sample from the segment's start)."""
    audio = _stereo_44k(tmp_path / "a.wav", 0)
    whole = torchaudio.functional.resample(torch.from_numpy(audio.mean(axis=1)), 44100, 8000).numpy()
    cache = SourceCache(tmp_path / "cache", 8000)
    for start, end in [(0, 44100), (441 * 23, 30001), (12345, 30001), (441, 443 + 441 * 7)]:
        cached = cache.segment(tmp_path / "a.wav", start, end)
        alone = torchaudio.functional.resample(torch.from_numpy(audio[start:end].mean(axis=1)), 44100, 8000).numpy()
        assert cached.shape == alone.shape
        first = int(np.floor(start * 8000 / 44100 + 0.5))
        assert abs(first * 44100 / 8000 - start) <= 44100 / 8000 / 2
        assert np.array_equal(cached, whole[first : first + len(cached)])
        if start % 441 == 0:
            inner = slice(40, len(alone) - 40)  # 5 ms at 8 kHz
            assert np.abs(cached[inner] - alone[inner]).max() < 0.02 * np.abs(alone[inner]).max()
    assert len(list((tmp_path / "cache" / "8000Hz").glob("*.npy"))) == 1


def test_a_file_that_changes_gets_a_new_entry(tmp_path):
    path = tmp_path / "a.wav"
    _stereo_44k(path, 0)
    cache = SourceCache(tmp_path / "cache", 8000)
    first = cache.segment(path, 0, 4410).copy()
    _stereo_44k(path, 1)
    os.utime(path, ns=(0, os.stat(path).st_mtime_ns + 10**9))
    second = SourceCache(tmp_path / "cache", 8000).segment(path, 0, 4410)
    assert not np.allclose(first, second)
    assert np.allclose(second, read_segment(path, 0, 4410, 8000).numpy()[: len(second)], atol=0.05)
    assert len(list((tmp_path / "cache" / "8000Hz").glob("*.npy"))) == 2


def test_mono_wav_at_the_data_rate_is_read_directly(tmp_path):
    sf.write(str(tmp_path / "a.wav"), np.zeros(800, dtype=np.float32), 8000)
    assert SourceCache(tmp_path / "cache", 8000).segment(tmp_path / "a.wav", 0, 800) is None
    assert not (tmp_path / "cache").exists()


def test_the_loader_of_a_prepared_dataset_reads_through_its_cache(tmp_path):
    data_dir = tmp_path / "data" / "folder"
    (data_dir / "audio").mkdir(parents=True)
    (data_dir / "sources.csv").write_text("path,label,split,duration,sample_rate,num_samples\n")
    audio = _stereo_44k(data_dir / "audio" / "a.wav", 2)
    row = {"mixture_id": "m0", "length": 8000, "sample_rate": 8000, "path_0": "audio/a.wav", "label_0": "x",
           "start_0": 0, "end_0": 44100, "mix_start_0": 0, "gain_db_0": 0.0}
    (data_dir / "1src").mkdir()
    pd.DataFrame([row], columns=view_columns(1)).to_csv(data_dir / "1src" / "test.csv", index=False)
    _, sources = ViewDataset(data_dir / "1src" / "test.csv", data_dir)[0]
    whole = torchaudio.functional.resample(torch.from_numpy(audio.mean(axis=1)), 44100, 8000)[:8000]
    assert torch.allclose(sources[0], whole, atol=1e-6)
    assert len(list((data_dir / "cache" / "8000Hz").glob("*.npy"))) == 1

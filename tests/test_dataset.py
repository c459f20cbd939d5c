import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from local.common.errors import RecipeError
from local.data.dataset import ViewDataset
from local.data.sources import load_sources
from local.data.view_csv import views_dir


def test_mixture_is_the_sum_of_the_sources(tiny_data):
    data_dir, cfg = tiny_data
    _, root = load_sources(data_dir)
    ds = ViewDataset(views_dir(data_dir, 2) / "train.csv", root)
    for i in range(4):
        mix, src = ds[i]
        assert mix.shape == (4000,) and src.shape == (2, 4000)
        assert mix.dtype == torch.float32
        torch.testing.assert_close(mix, src.sum(0))
        assert (src.pow(2).mean(dim=1) > 0).all()


def test_sources_are_the_gained_segments_at_their_offsets(tiny_data):
    data_dir, _ = tiny_data
    _, root = load_sources(data_dir)
    csv = views_dir(data_dir, 2) / "train.csv"
    row = pd.read_csv(csv).iloc[3]
    _, src = ViewDataset(csv, root)[3]
    for i in range(2):
        audio, _ = sf.read(str(root / row[f"path_{i}"]), start=row[f"start_{i}"], stop=row[f"end_{i}"], dtype="float32")
        expected = np.zeros(row["length"], dtype=np.float32)
        off = row[f"mix_start_{i}"]
        expected[off : off + len(audio)] = audio * 10 ** (row[f"gain_db_{i}"] / 20)
        np.testing.assert_allclose(src[i].numpy(), expected, atol=1e-6)


def _one_row_view(tmp_path, path, start, end, length=800, sr=8000):
    df = pd.DataFrame([{"mixture_id": "m0", "length": length, "sample_rate": sr, "path_0": path, "label_0": "a",
                        "start_0": start, "end_0": end, "mix_start_0": 0, "gain_db_0": 0.0}])
    df.to_csv(tmp_path / "view.csv", index=False)
    return tmp_path / "view.csv"


def test_resampling_a_file_at_another_rate(tmp_path):
    t = np.arange(16000) / 16000
    sf.write(tmp_path / "tone.wav", 0.5 * np.sin(2 * np.pi * 440 * t), 16000)
    csv = _one_row_view(tmp_path, "tone.wav", 0, 1600, length=800)
    mix, src = ViewDataset(csv, tmp_path)[0]
    expected = 0.5 * np.sin(2 * np.pi * 440 * np.arange(800) / 8000)
    assert np.abs(mix.numpy()[50:-50] - expected[50:-50]).max() < 0.02
    with pytest.raises(RecipeError, match="tone.wav is at 16000 Hz, the views at 8000 Hz"):
        ViewDataset(csv, tmp_path, resample=False)[0]


def test_row_pointing_past_the_end_of_a_file_is_named(tmp_path):
    sf.write(tmp_path / "short.wav", np.zeros(500), 8000)
    csv = _one_row_view(tmp_path, "short.wav", 100, 900)
    with pytest.raises(RecipeError,
                       match=r"view.csv row 2: segment \[100, 900\) lies outside .*short.wav \(500 samples\)"):
        ViewDataset(csv, tmp_path)[0]


def test_dynamic_mixing_draws_new_reproducible_training_mixtures_from_training_files(tiny_data):
    from local.data.dynamic_mixing import DynamicMixingDataset
    from local.data.views import split_candidates

    data_dir, cfg = tiny_data
    sources, root = load_sources(data_dir)
    csv = views_dir(data_dir, 2) / "train.csv"
    dynamic, fixed = DynamicMixingDataset(csv, data_dir, cfg["data"]), ViewDataset(csv, root)
    n = len(fixed)
    assert len(dynamic) == n
    for i in range(3):  # epoch 0 is the stage-1 views
        torch.testing.assert_close(dynamic[i], fixed[i])
    train_files = {r["path"] for rows in split_candidates(sources, cfg["data"])["train"].values() for r in rows}
    differs = 0
    for i in range(n):
        view = dynamic.view(2, i)
        assert {view["path_0"], view["path_1"]} <= train_files and view["label_0"] < view["label_1"]
        differs += view != dynamic.view(0, i)
    assert differs >= n - 1
    mixture, sources_ = dynamic[2 * n + 5]
    again, _ = DynamicMixingDataset(csv, data_dir, cfg["data"])[2 * n + 5]  # another process, the same item
    assert torch.equal(mixture, again) and torch.allclose(sources_.sum(0), mixture)
    assert not torch.equal(mixture, dynamic[3 * n + 5][0])

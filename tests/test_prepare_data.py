import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from local.common.errors import RecipeError
from local.data.prepare import folder_sources, prepare
from local.data.synth_sounds import CATEGORIES, render


def _folder(tmp_path, counts):
    for label, n in counts.items():
        (tmp_path / label).mkdir(parents=True)
        for i in range(n):
            sf.write(tmp_path / label / f"{i}.wav", 0.1 * np.random.default_rng(i).standard_normal(800), 8000)
    return tmp_path


def test_synth_dataset_is_deterministic_and_listed(tiny_data, tiny_cfg, tmp_path):
    data_dir, _ = tiny_data
    df = pd.read_csv(data_dir / "sources.csv", keep_default_na=False)
    assert list(df.columns) == ["path", "label", "split", "duration", "sample_rate", "num_samples"]
    assert set(df["label"]) == set(CATEGORIES) and len(CATEGORIES) >= 8
    assert (df.groupby("label").size() == 6).all()
    for _, row in df.head(5).iterrows():
        info = sf.info(str(data_dir / row["path"]))
        assert info.frames == row["num_samples"] and info.samplerate == row["sample_rate"] == 8000
        assert 1.0 <= row["duration"] <= 1.6
    again = tmp_path / "synth"
    prepare(tiny_cfg["data"], again)
    assert (again / "sources.csv").read_bytes() == (data_dir / "sources.csv").read_bytes()
    a, _ = sf.read(str(data_dir / df["path"][7]))
    b, _ = sf.read(str(again / df["path"][7]))
    np.testing.assert_array_equal(a, b)


def test_categories_differ_in_spectral_centroid():
    """The synthetic categories must be distinguishable: their mean spectral centroids are spread out."""
    centroids = []
    for label in CATEGORIES:
        x = render(label, np.random.default_rng(0), 8000, 2.0)
        spec = np.abs(np.fft.rfft(x))
        centroids.append((spec * np.fft.rfftfreq(len(x), 1 / 8000)).sum() / spec.sum())
    assert max(centroids) - min(centroids) > 1000


def test_folder_listing(tmp_path):
    rows = folder_sources(_folder(tmp_path, {"dog": 3, "rain": 4}))
    assert [r[1] for r in rows] == ["dog"] * 3 + ["rain"] * 4
    assert rows[0][0] == "dog/0.wav" and rows[0][4] == 8000 and rows[0][5] == 800


def test_folder_reads_every_format_libsndfile_reads_and_names_what_it_skips(tmp_path, capsys):
    folder = _folder(tmp_path, {"dog": 3})
    tone = 0.1 * np.sin(np.arange(8000) / 5.0)
    sf.write(folder / "dog" / "extra.oga", tone, 8000, format="OGG", subtype="VORBIS")
    sf.write(folder / "dog" / "more.flac", tone, 8000)
    if "MP3" in sf.available_formats():
        sf.write(folder / "dog" / "song.mp3", tone, 8000, format="MP3")
    (folder / "dog" / "notes.txt").write_text("not audio")
    rows = folder_sources(folder)
    names = sorted(r[0] for r in rows)
    assert "dog/extra.oga" in names and "dog/more.flac" in names
    assert ("dog/song.mp3" in names) == ("MP3" in sf.available_formats())
    out = capsys.readouterr().out
    assert "skipped 1 file(s)" in out and "dog/notes.txt" in out


def test_missing_or_empty_data_dir(tmp_path):
    with pytest.raises(RecipeError, match="does not exist"):
        folder_sources(tmp_path / "nope")
    with pytest.raises(RecipeError, match="has no category folders"):
        folder_sources(tmp_path)


def test_category_with_too_few_files(tmp_path):
    with pytest.raises(RecipeError,
                       match=r"category folder .*/dog has 2 audio file\(s\); each category needs at least 3"):
        folder_sources(_folder(tmp_path, {"dog": 2, "rain": 4}))


def test_unreadable_and_empty_wavs_are_named(tmp_path):
    root = _folder(tmp_path, {"dog": 3})
    (root / "dog" / "3.wav").write_bytes(b"RIFF garbage")
    with pytest.raises(RecipeError, match=r"cannot read audio file .*dog/3.wav"):
        folder_sources(root)
    (root / "dog" / "3.wav").unlink()
    sf.write(root / "dog" / "4.wav", np.zeros(0), 8000)
    with pytest.raises(RecipeError, match=r"dog/4.wav is empty"):
        folder_sources(root)


def test_failed_prepare_writes_nothing(tmp_path, tiny_cfg):
    root = _folder(tmp_path / "src", {"dog": 2})
    out = tmp_path / "data" / "mine"
    with pytest.raises(RecipeError):
        prepare(dict(tiny_cfg["data"], source_dir=str(root)), out)
    assert not (out / "sources.csv").exists() and not (out / "dataset.yml").exists()

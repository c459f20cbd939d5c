"""Mixtures mean what they say: levels in the mixture's band over the active part, overlap by construction,
and random streams that never coincide (issue: mixtures that mean what they say)."""
import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from local.common import seeding
from local.common.errors import RecipeError
from local.data.dataset import ViewDataset
from local.data.source_cache import SourceCache
from local.data.view_csv import view_columns
from local.data.views import draw_view

MIX_SR = 8000


def _loader_sources(tmp_path, rows, cache=None):
    csv = tmp_path / "views.csv"
    pd.DataFrame(rows,
                 columns=view_columns(len([c for c in rows[0] if c.startswith("path_")]))).to_csv(csv, index=False)
    dataset = ViewDataset(csv, tmp_path, cache=cache)
    return [dataset[i][1].double().numpy() for i in range(len(dataset))]


def _active_level(x, sr):
    """Written out independently of local/data/activity.py: RMS over the 10 ms frames within 40 dB of the loudest."""
    hop = sr // 100
    frames = [x[k : k + hop] for k in range(0, len(x), hop)]
    power = np.array([np.mean(f ** 2) for f in frames])
    keep = (power >= power.max() * 1e-4) & (power > 1e-9)
    return 10 * np.log10(np.mean(np.concatenate([f for f, k in zip(frames, keep) if k]) ** 2))


def _write(path, audio, sr):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio, sr, subtype="FLOAT")
    return {"path": str(path.relative_to(path.parents[1])), "sample_rate": sr, "num_samples": len(audio)}


@pytest.mark.parametrize("cached", [False, True])
def test_a_broadband_44k_file_mixed_at_8k_lands_at_its_drawn_level(tmp_path, cached):
    """White noise at 44.1 kHz keeps 4/22.05 of its power below 4 kHz; half of the 2 s file is silent. The level
    measured on the file (RMS over the segment at 44.1 kHz) would put the source 7.4 + 3.0 dB away from its draw."""
    rng = np.random.default_rng(0)
    noise = np.zeros(2 * 44100)
    noise[22050:66150] = 0.1 * rng.standard_normal(44100)  # 1 s of broadband noise in 2 s
    other = 0.05 * np.sin(2 * np.pi * 440 * np.arange(2 * 44100) / 44100)
    cands = {"a": [_write(tmp_path / "a" / "noise.wav", noise, 44100)],
             "b": [_write(tmp_path / "b" / "tone.wav", other, 44100)]}
    # stage 1 and the loader read through the source cache (local/data/source_cache.py), or both directly
    cache = SourceCache(tmp_path / "cache", MIX_SR) if cached else None
    rows = [draw_view(cands, ["a", "b"], tmp_path, 2, 2 * MIX_SR, MIX_SR, (-25.0, -25.0), np.random.default_rng(m),
                      f"m{m}", "t0", 0.25, cache)[0] for m in range(4)]
    assert len(list(tmp_path.glob("cache/*/*.npy"))) == (2 if cached else 0)
    for row, sources in zip(rows, _loader_sources(tmp_path, rows, cache)):
        heard = _active_level(sources[0], MIX_SR)
        assert heard == pytest.approx(-25.0, abs=0.5)
        # the gain the old measure (RMS over the whole segment at the file's rate) gave, applied to the same audio
        old_gain = -25.0 - 10 * np.log10(np.mean(noise ** 2))
        heard_with_old_gain = heard - row["gain_db_0"] + old_gain
        assert heard_with_old_gain < -25.0 - 3.0


def test_the_silence_check_hears_the_mixture_band(tmp_path):
    """A 15 kHz tone is loud at 44.1 kHz and silent at 8 kHz: it is never drawn as a source."""
    t = np.arange(44100) / 44100
    cands = {"a": [_write(tmp_path / "a" / "high.wav", 0.5 * np.sin(2 * np.pi * 15000 * t), 44100)],
             "b": [_write(tmp_path / "b" / "low.wav", 0.5 * np.sin(2 * np.pi * 300 * t), 44100)]}
    with pytest.raises(RecipeError, match="not silent"):
        draw_view(cands, ["a", "b"], tmp_path, 2, MIX_SR, MIX_SR, (-30.0, -20.0), np.random.default_rng(0), "m0")


def test_short_hits_always_sound_together_for_min_overlap(tmp_path):
    """0.3 s hits at random onsets in 2 s: without the constraint most 3-source mixtures never overlap; with
    min_overlap = 0.1 s every one does, measured on the loader's output."""
    rng = np.random.default_rng(1)
    cands = {}
    for label, freq in (("a", 300), ("b", 900), ("c", 2000)):
        cands[label] = []
        for k in range(3):
            n = int(0.3 * 16000)
            hit = np.sin(2 * np.pi * freq * np.arange(n) / 16000) * np.exp(-np.arange(n) / 3000) * rng.uniform(0.2, 0.9)
            cands[label].append(_write(tmp_path / label / f"hit{k}.wav", hit, 16000))

    def overlaps(min_overlap):
        rows = [draw_view(cands, ["a", "b", "c"], tmp_path, 3, 2 * MIX_SR, MIX_SR, (-30.0, -20.0),
                          np.random.default_rng([7, m]), f"m{m}", "t0", min_overlap)[0] for m in range(30)]
        out = []
        for sources in _loader_sources(tmp_path, rows):
            hop = MIX_SR // 100
            active = []
            for s in sources:
                p = np.array([np.mean(s[k : k + hop] ** 2) for k in range(0, len(s), hop)])
                active.append((p >= p.max() * 1e-4) & (p > 1e-9))
            out.append(np.logical_and.reduce(active).sum() * hop / MIX_SR)
        return np.array(out)

    assert (overlaps(0.0) == 0).mean() > 0.5
    assert (overlaps(0.1) >= 0.1 - 0.02).all()  # within two 10 ms frames of the constraint (frame alignment)


def test_an_overlap_no_file_can_give_is_refused_in_one_line(tmp_path):
    """Two 1 s files as long as the mixture, one sounding in its first half, the other in its second: no placement
    overlaps, so the views are refused with what to do; a 0.2 s hit with min_overlap 0.5 s lies inside the other."""
    first, second = np.zeros(MIX_SR), np.zeros(MIX_SR)
    first[: MIX_SR // 2], second[MIX_SR // 2 :] = 0.3, 0.3
    cands = {"a": [_write(tmp_path / "a" / "first.wav", first, MIX_SR)],
             "b": [_write(tmp_path / "b" / "second.wav", second, MIX_SR)]}
    with pytest.raises(RecipeError, match="lower data.min_overlap"):
        draw_view(cands, ["a", "b"], tmp_path, 2, MIX_SR, MIX_SR, (-30.0, -20.0), np.random.default_rng(0), "m0", "t0",
                  0.1)
    cands["a"] = [_write(tmp_path / "a" / "hit.wav", 0.3 * np.ones(int(0.2 * MIX_SR)), MIX_SR)]
    row, seconds = draw_view(cands, ["a", "b"], tmp_path, 2, MIX_SR, MIX_SR, (-30.0, -20.0), np.random.default_rng(0),
                             "m0", "t0", 0.5)
    assert seconds == pytest.approx(0.2) and row["mix_start_0"] >= MIX_SR // 2


def test_random_streams_of_different_domains_or_keys_differ():
    """The collision of the old seeds: [seed, split 2, n_src 2] for the test views and [seed, n_src 2, epoch 2,
    item 0] for dynamic mixing gave one stream; every domain and key list now has its own."""
    old_test_views = np.random.default_rng([17, 2, 2]).integers(1 << 30, size=4)
    old_dynamic = np.random.default_rng([17, 2, 2, 0]).integers(1 << 30, size=4)
    assert (old_test_views == old_dynamic).all()  # the bug this guards against
    assert not (seeding.stream("views", 17, 2, 2).integers(1 << 30, size=4)
                == seeding.stream("dynamic_mixing", 17, 2, 2, 0).integers(1 << 30, size=4)).all()
    draws = {}
    for domain in seeding.DOMAINS:
        for keys in ((17,), (17, 0), (17, 2, 2), (17, 2, 2, 0), (0, 17)):
            draws[(domain, keys)] = tuple(seeding.stream(domain, *keys).integers(1 << 62, size=2))
    assert len(set(draws.values())) == len(draws)
    assert len({seeding.torch_seed(d, 0) for d in seeding.DOMAINS}) == len(seeding.DOMAINS)
    with pytest.raises(KeyError, match="unknown random-stream domain"):
        seeding.stream("nope", 1)

"""Augmentation of dynamically mixed training sources (local/data/augmentation.py): what each perturbation does,
checked against an independent computation, and that it is seeded per item."""
import copy

import numpy as np
import pytest
import torch

from local.common.errors import RecipeError
from local.data import augmentation
from local.data.dataset import ViewDataset
from local.data.dynamic_mixing import DynamicMixingDataset, check_augmentation
from local.data.sources import load_sources
from local.data.view_csv import views_dir


def _dominant_frequency(x, sample_rate):
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return np.fft.rfftfreq(len(x), 1 / sample_rate)[spectrum.argmax()]


def test_speed_factor_plays_a_tone_faster_and_shorter():
    """A 440 Hz tone sped up by 1.1 lasts 1/1.1 as long and sounds at 484 Hz (pitch moves with tempo)."""
    sr = 8000
    tone = torch.sin(2 * torch.pi * 440 * torch.arange(8000) / sr)
    fast = augmentation.change_speed(tone, 1.1).numpy()
    assert abs(len(fast) - 8000 / 1.1) <= 1
    assert abs(_dominant_frequency(fast, sr) - 484) < 3
    slow = augmentation.change_speed(tone, 0.9).numpy()
    assert abs(len(slow) - 8000 / 0.9) <= 1 and abs(_dominant_frequency(slow, sr) - 396) < 3
    # amplitude kept: the level the view's gain was computed for stays within 0.1 dB
    rms = lambda x: 20 * np.log10(np.sqrt(np.mean(np.asarray(x[500:-500]) ** 2)))  # noqa: E731
    assert abs(rms(fast) - rms(tone)) < 0.1


def test_peaking_band_has_its_gain_at_the_centre_and_none_far_away():
    """The cookbook peaking filter, evaluated as H(e^jw) = B(e^jw) / A(e^jw) written out here, has the drawn gain
    at its centre frequency; filtering a tone at the centre scales it by that gain, without clipping at 1."""
    sr, centre, gain = 8000, 1000.0, 9.0
    b, a = augmentation.peaking_coefficients(centre, gain, 1.0, sr)
    z = np.exp(-1j * 2 * np.pi * np.array([centre, 60.0]) / sr)
    h = (b[0] + b[1] * z + b[2] * z ** 2) / (a[0] + a[1] * z + a[2] * z ** 2)
    assert abs(20 * np.log10(abs(h[0])) - gain) < 1e-6 and abs(20 * np.log10(abs(h[1]))) < 0.3

    class FixedDraws:  # the centre, gain and Q the filter is asked for, in equalise's order
        def __init__(self):
            self.values = [np.log(centre), gain, 1.0]

        def uniform(self, lo, hi):
            return self.values.pop(0)

    tone = 0.9 * torch.sin(2 * torch.pi * centre * torch.arange(16000) / sr)
    out = augmentation.equalise(tone, sr, FixedDraws(), 12.0).numpy()
    ratio_db = 20 * np.log10(np.abs(out[8000:]).max() / 0.9)
    assert abs(ratio_db - gain) < 0.05 and np.abs(out).max() > 1.5  # boosted past 1: not clamped


def test_bad_settings_are_refused_in_one_line():
    with pytest.raises(RecipeError, match=r"data.augmentation: unknown key\(s\) \['pitch'\]"):
        augmentation.settings({"augmentation": {"pitch": 0.1}})
    with pytest.raises(RecipeError, match=r"data.augmentation.speed: 0.6 is not in \[0, 0.5\)"):
        augmentation.settings({"augmentation": {"speed": 0.6}})
    with pytest.raises(RecipeError, match="set data.dynamic_mixing: true"):
        check_augmentation({"dynamic_mixing": False, "augmentation": {"speed": 0.1, "eq_db": 0.0}})
    check_augmentation({"dynamic_mixing": False, "augmentation": {"speed": 0.0, "eq_db": 0.0}})  # off: fine
    assert augmentation.settings({"augmentation": {"speed": 0.1, "eq_db": 0}}) == {"speed": 0.1}


def test_augmented_items_are_seeded_per_item_and_epoch_zero_is_untouched(tiny_data):
    data_dir, cfg = tiny_data
    _, root = load_sources(data_dir)
    csv = views_dir(data_dir, 2) / "train.csv"
    data_cfg = copy.deepcopy(cfg["data"])
    data_cfg["augmentation"] = {"speed": 0.1, "eq_db": 6.0}
    plain, augmented = DynamicMixingDataset(csv, data_dir, cfg["data"]), DynamicMixingDataset(csv, data_dir, data_cfg)
    n = len(plain)
    for i in range(3):  # the stage-1 views are never perturbed
        torch.testing.assert_close(augmented[i], ViewDataset(csv, root)[i])
    item = 2 * n + 3
    mixture, sources = augmented[item]
    again, _ = DynamicMixingDataset(csv, data_dir, data_cfg)[item]  # another process: the same perturbation
    assert torch.equal(mixture, again) and torch.allclose(sources.sum(0), mixture)
    assert mixture.shape == plain[item][0].shape
    assert not torch.allclose(mixture, plain[item][0], atol=1e-3)  # the same view, perturbed
    assert augmented.view(2, 3) == plain.view(2, 3)  # the view draws are those of dynamic mixing alone

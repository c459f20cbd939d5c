"""Augmentation of dynamically mixed training sources, for small datasets (issue 20, item 5).

Dynamic mixing (local/data/dynamic_mixing.py) already draws, for every training item of every epoch, a new
file per category, a new segment offset, a new placement and a new level within `data.level_db_range`: random
offsets and random gains come with it. With a few dozen files per category that is still the same few dozen
recordings; two perturbations make each draw sound like another recording:

- **speed** (Ko et al., "Audio augmentation for speech recognition", Interspeech 2015; Kaldi's speed
  perturbation): the segment is resampled by a factor f drawn uniformly in [1 - s, 1 + s], so that it plays f
  times faster, pitch and tempo together. Factors are rounded to 1 % so that torchaudio's polyphase resampler
  keeps a small kernel (f = 107/100).
- **equalisation**: one peaking biquad (Bristow-Johnson's Audio EQ Cookbook) per source, centre
  frequency log-uniform between 100 Hz and 0.8 x Nyquist, Q 0.7-2, gain uniform in [-g, g] dB: the colour of
  another microphone or room.

Each draw comes from its own random stream (domain "augmentation", keyed like dynamic mixing by view seed,
n_src, epoch and item), so a resumed or multi-worker run perturbs the same item the same way: exact resume stays
exact. Epoch 0 (the stage-1 views) and the validation and test views are never perturbed.

The view's gain is applied after the perturbation, so the level stays near the drawn one (resampling keeps the
amplitude; an equaliser band of g dB moves it by less than g). A sped-up segment is shorter and a slowed one
longer than its view's: it keeps its onset and is cut at the mixture's end, so the overlap of a perturbed
training mixture may differ from `data.min_overlap` by up to the factor (the test views are exact).
"""
import math

import torch
import torchaudio

from local.common import seeding
from local.common.errors import RecipeError

KEYS = ("speed", "eq_db")


def settings(data_cfg):
    """The augmentation settings of a config's data group ({} when off), checked."""
    cfg = data_cfg.get("augmentation") or {}
    unknown = sorted(set(cfg) - set(KEYS))
    if unknown:
        raise RecipeError(f"data.augmentation: unknown key(s) {unknown}; known: {list(KEYS)}")
    speed, eq_db = float(cfg.get("speed") or 0.0), float(cfg.get("eq_db") or 0.0)
    if not 0.0 <= speed < 0.5:
        raise RecipeError(f"data.augmentation.speed: {speed} is not in [0, 0.5) (e.g. 0.1 for +-10 %)")
    if not 0.0 <= eq_db <= 24.0:
        raise RecipeError(f"data.augmentation.eq_db: {eq_db} is not in [0, 24] dB")
    return {k: v for k, v in (("speed", speed), ("eq_db", eq_db)) if v > 0}


def speed_factor(rng, speed):
    """A factor in [1 - speed, 1 + speed], rounded to 1 %."""
    return round(float(rng.uniform(1.0 - speed, 1.0 + speed)), 2)


def change_speed(segment, factor):
    """`segment` played `factor` times faster: len / factor samples at the same rate (band-limited resampling)."""
    if factor == 1.0:
        return segment
    return torchaudio.functional.resample(segment, int(round(factor * 100)), 100)


def peaking_coefficients(centre, gain_db, q, sample_rate):
    """(b, a) of the Audio EQ Cookbook's peaking filter, normalised to a0 = 1."""
    w0 = 2 * math.pi * centre / sample_rate
    amplitude, alpha = 10 ** (gain_db / 40), math.sin(w0) / (2 * q)
    b = [1 + alpha * amplitude, -2 * math.cos(w0), 1 - alpha * amplitude]
    a = [1 + alpha / amplitude, -2 * math.cos(w0), 1 - alpha / amplitude]
    return [x / a[0] for x in b], [x / a[0] for x in a]


def equalise(segment, sample_rate, rng, eq_db):
    """One random peaking band of at most +-eq_db dB. Written with lfilter(clamp=False) rather than
    torchaudio's equalizer_biquad, which clamps its output to [-1, 1] and would clip a boosted loud file."""
    centre = math.exp(rng.uniform(math.log(100.0), math.log(0.8 * sample_rate / 2)))
    gain, q = float(rng.uniform(-eq_db, eq_db)), float(rng.uniform(0.7, 2.0))
    b, a = peaking_coefficients(centre, gain, q, sample_rate)
    return torchaudio.functional.lfilter(segment, torch.tensor(a, dtype=segment.dtype),
                                         torch.tensor(b, dtype=segment.dtype), clamp=False)


class Augmenter:
    """Perturbs the sources of one dynamically mixed item, from that item's own random stream."""

    def __init__(self, cfg, seed, n_src):
        self.cfg, self.seed, self.n_src = cfg, int(seed), int(n_src)

    def __bool__(self):
        return bool(self.cfg)

    def stream(self, epoch, index):
        return seeding.stream("augmentation", self.seed, self.n_src, epoch, index)

    def perturb(self, segment, sample_rate, rng):
        """One source segment, perturbed (draws in a fixed order: speed, then equalisation)."""
        if "speed" in self.cfg:
            segment = change_speed(segment, speed_factor(rng, self.cfg["speed"]))
        if "eq_db" in self.cfg:
            segment = equalise(segment, sample_rate, rng, self.cfg["eq_db"])
        return segment

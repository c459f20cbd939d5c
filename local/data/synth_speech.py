"""Procedural voiced "speech" for the embedded `synth_speakers` dataset (speaker separation).

A source-filter model, as in classic formant synthesis (Klatt 1980):
  source  a glottal pulse train: one pulse per pitch period at fractional positions (phase
          accumulation), shaped by a two-pole low-pass (the glottal spectral tilt), plus a little
          aspiration noise; the pitch follows a speaker-specific range with declination over the
          utterance, an accent per syllable, and jitter.
  filter  a cascade of four formant resonators whose frequencies move from vowel to vowel, scaled by
          the speaker's vocal-tract length factor (shorter tract, higher formants).
  prosody syllable-like on/off envelopes: voiced nuclei of 100-300 ms separated by short gaps and
          occasional pauses, at a speaker-specific rate.
Speakers differ in pitch range, vocal-tract scaling, speaking rate and breathiness, so a speaker
identity is learnable and two speakers overlap in frequency, as real speech does.
"""
import numpy as np
from scipy.signal import lfilter

# F1-F4 (Hz) of a few vowels for a reference adult vocal tract (Peterson & Barney 1952, rounded).
VOWELS = np.array([
    [730, 1090, 2440, 3400],  # a
    [270, 2290, 3010, 3600],  # i
    [300, 870, 2240, 3300],   # u
    [530, 1840, 2480, 3500],  # e
    [570, 840, 2410, 3300],   # o
    [660, 1720, 2410, 3400],  # ae
])
BANDWIDTHS = np.array([80.0, 100.0, 140.0, 200.0])
BLOCK_S = 0.01  # formants are updated every 10 ms


def speaker_params(rng):
    """A speaker: pitch register, vocal-tract scale, speaking rate, breathiness."""
    female = rng.random() < 0.5
    f0 = rng.uniform(170, 250) if female else rng.uniform(85, 150)
    return {
        "f0": f0,
        "f0_range_semitones": rng.uniform(2.0, 6.0),
        "tract_scale": (rng.uniform(1.08, 1.2) if female else rng.uniform(0.88, 1.02)),
        "syllables_per_second": rng.uniform(3.0, 5.5),
        "breathiness": rng.uniform(0.01, 0.06),
    }


def _resonator(freq, bw, sr):
    """Second-order resonator coefficients (unit gain at DC)."""
    r = np.exp(-np.pi * bw / sr)
    a = [1.0, -2 * r * np.cos(2 * np.pi * freq / sr), r * r]
    return [sum(a)], a


def utterance(rng, speaker, sr, seconds):
    """One utterance of `speaker`: float32 samples, RMS normalised to -20 dBFS."""
    n = int(round(seconds * sr))
    # Syllable plan: (start, length, vowel) of voiced nuclei.
    nuclei, pos = [], int(rng.uniform(0.02, 0.15) * sr)
    mean_len = sr / speaker["syllables_per_second"]
    while pos < n:
        length = int(rng.uniform(0.55, 0.85) * mean_len)
        nuclei.append((pos, min(length, n - pos), rng.integers(len(VOWELS))))
        gap = rng.uniform(0.15, 0.45) * mean_len
        if rng.random() < 0.1:
            gap += rng.uniform(0.15, 0.4) * sr  # a pause
        pos += length + int(gap)
    envelope = np.zeros(n)
    targets = np.zeros((n, 4))
    current = VOWELS[nuclei[0][2]].astype(float)
    accents = np.zeros(n)
    for start, length, vowel in nuclei:
        if length < 4:
            continue
        ramp = max(1, min(int(0.02 * sr), length // 2))
        env = np.ones(length)
        env[:ramp] = np.sin(np.linspace(0, np.pi / 2, ramp)) ** 2
        env[-ramp:] = env[:ramp][::-1]
        envelope[start : start + length] = env
        nxt = VOWELS[vowel]
        glide = np.linspace(0, 1, length)[:, None]
        targets[start : start + length] = current + (nxt - current) * np.minimum(1.0, 3 * glide)
        accents[start : start + length] = rng.uniform(-0.3, 1.0) * np.sin(np.linspace(0, np.pi, length))
        current = nxt
    # Hold formants through gaps (the tract keeps its last shape).
    for i in range(1, n):
        if not targets[i].any():
            targets[i] = targets[i - 1]
    targets[~targets.any(axis=1)] = VOWELS[0]
    formants = np.minimum(targets * speaker["tract_scale"], 0.45 * sr)

    # Pitch: declination + syllable accents + jitter, in semitones around the speaker's f0.
    t = np.arange(n) / sr
    semitones = speaker["f0_range_semitones"] * (0.5 * accents - 0.4 * t / max(seconds, 1e-3))
    semitones += 0.15 * np.convolve(rng.standard_normal(n), np.ones(200) / 200, mode="same") * 10
    f0 = speaker["f0"] * 2 ** (semitones / 12)
    phase = np.cumsum(f0 / sr)
    pulses = np.zeros(n)
    pulses[1:][np.diff(np.floor(phase)) > 0] = 1.0
    glottal = lfilter([1.0], [1.0, -1.8, 0.81], pulses)  # two-pole glottal tilt (-12 dB/oct)
    glottal = glottal / (np.std(glottal) + 1e-9) + speaker["breathiness"] * rng.standard_normal(n)
    source = glottal * envelope

    out = np.zeros(n)
    block = max(1, int(BLOCK_S * sr))
    states = [np.zeros(2) for _ in range(4)]
    for start in range(0, n, block):
        seg = source[start : start + block]
        for k in range(4):
            b, a = _resonator(formants[start, k], BANDWIDTHS[k], sr)
            seg, states[k] = lfilter(b, a, seg, zi=states[k])
        out[start : start + block] = seg
    out = np.diff(out, prepend=0.0)  # lip radiation (+6 dB/oct)
    out *= 10 ** (-20 / 20) / (np.sqrt(np.mean(out**2)) + 1e-12)
    peak = np.max(np.abs(out))
    if peak > 0.99:
        out *= 0.99 / peak
    return out.astype(np.float32)

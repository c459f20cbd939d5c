"""Where a sound is, and how loud it is there: the active part of a signal, its level, and overlap.

A source's level is what the model hears: it is measured on the segment as the loader returns it (at the
mixture's rate, so energy above the mixture's Nyquist frequency does not count) and over the sound's active
part only, so that a 0.2 s hit in a 2 s segment is not measured 10 dB quieter than it sounds. The active part
is the set of 10 ms frames whose power is within `ACTIVE_DB` (40 dB) of the segment's loudest frame and above
digital silence: the gated "active level" of ITU-T P.56 in its simplest form, and the 40 dB range that
BSS evaluation practice uses to decide which time-frequency bins are active (Asteroid's `ebased_vad`).
The same frames decide when sources sound together (`overlap_samples`).
"""
import numpy as np

FRAME_SECONDS = 0.01
ACTIVE_DB = 40.0
FLOOR_DB = -90.0  # a frame below this (dBFS) is digital silence, whatever the segment's peak


def frame_length(sample_rate):
    return max(1, int(round(FRAME_SECONDS * sample_rate)))


def frame_power(audio, sample_rate):
    """Mean square of each 10 ms frame of a 1-D signal (the last frame may be shorter)."""
    audio = np.asarray(audio, dtype=np.float64)
    hop = frame_length(sample_rate)
    n_frames = -(-len(audio) // hop)
    padded = np.zeros(n_frames * hop)
    padded[: len(audio)] = audio ** 2
    sizes = np.full(n_frames, hop, dtype=float)
    if n_frames:
        sizes[-1] = len(audio) - (n_frames - 1) * hop
    return padded.reshape(n_frames, hop).sum(axis=1) / sizes


def active_frames(audio, sample_rate, active_db=ACTIVE_DB):
    """Boolean per 10 ms frame: within `active_db` of the loudest frame and above digital silence."""
    power = frame_power(audio, sample_rate)
    if not len(power) or power.max() <= 0:
        return np.zeros(len(power), dtype=bool)
    return (power >= power.max() * 10 ** (-active_db / 10)) & (power > 10 ** (FLOOR_DB / 10))


def active_mask(audio, sample_rate, active_db=ACTIVE_DB):
    """Boolean per sample: the sample lies in an active frame."""
    return np.repeat(active_frames(audio, sample_rate, active_db), frame_length(sample_rate))[: len(audio)]


def active_level_db(audio, sample_rate):
    """Level (dBFS, RMS) over the active samples; -inf for a silent signal."""
    audio = np.asarray(audio, dtype=np.float64)
    mask = active_mask(audio, sample_rate)
    if not mask.any():
        return float("-inf")
    return float(10 * np.log10(np.mean(audio[mask] ** 2)))


def rms_db(audio):
    """Level (dBFS, RMS) over the whole signal, silence included."""
    audio = np.asarray(audio, dtype=np.float64)
    return float(10 * np.log10(np.mean(audio ** 2) + 1e-24)) if len(audio) else float("-inf")


def overlap_samples(sources, sample_rate):
    """Samples during which every source [n, T] is active: how long the sources of a mixture sound together."""
    sources = np.asarray(sources)
    together = np.ones(sources.shape[-1], dtype=bool)
    for source in sources:
        together &= active_mask(source, sample_rate)
    return int(together.sum())


OVERLAP_EDGES = (0.1, 0.25, 0.5, 1.0)  # seconds: the bins of overlap that views.yml and the evaluation summary report


def overlap_shares(overlap_seconds):
    """{bin: share of mixtures}: 'none' (never sounding together), '< 0.1 s', '0.1-0.25 s', ..., '>= 1 s'."""
    values = np.asarray(overlap_seconds, dtype=float)
    n = max(len(values), 1)
    shares = {"none": round(float((values <= 0).sum()) / n, 4)}
    for low, high in zip((0.0,) + OVERLAP_EDGES, OVERLAP_EDGES + (np.inf,)):
        inside = ((values > 0) if low == 0 else (values >= low)) & (values < high)
        name = f"< {high:g} s" if low == 0 else f">= {low:g} s" if high == np.inf else f"{low:g}-{high:g} s"
        shares[name] = round(float(inside.sum()) / n, 4)
    return shares

"""Procedural sound categories for the embedded `synth` dataset.

Each category is a small generator with randomised parameters and a clearly different
spectro-temporal structure (harmonic and voiced, frequency-modulated, noisy, impulsive, inharmonic,
amplitude-modulated, ...), so that category separation is learnable yet not trivial: several
categories overlap in frequency and differ mainly in their temporal patterns. Frequencies are kept
below 0.9 x Nyquist, so any sample rate from 8 kHz up works.

Every generator has the signature `(rng, sr, n) -> float64 array of n samples`; `render` adds the
level normalisation. Determinism comes from the caller's `rng`.
"""
import numpy as np

TWO_PI = 2.0 * np.pi


def _t(n, sr):
    return np.arange(n) / sr


def _smooth_gate(rng, n, sr, on_range, off_range, ramp_s=0.01):
    """A 0/1 on-off pattern with raised-cosine ramps: syllables, bursts, phrases."""
    gate = np.zeros(n)
    pos = int(rng.uniform(0, off_range[1]) * sr)
    while pos < n:
        on = int(rng.uniform(*on_range) * sr)
        gate[pos : pos + on] = 1.0
        pos += on + int(rng.uniform(*off_range) * sr)
    ramp = max(1, int(ramp_s * sr))
    kernel = np.hanning(2 * ramp + 1)
    return np.convolve(gate, kernel / kernel.sum(), mode="same")


def _bandpass_noise(rng, n, sr, low, high):
    spec = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1.0 / sr)
    width = max(high - low, 1.0)
    shape = np.exp(-0.5 * ((freqs - 0.5 * (low + high)) / (0.5 * width)) ** 4)
    return np.fft.irfft(spec * shape, n)


def voice(rng, sr, n):
    """Voiced, vowel-like tone: harmonics with vibrato and intonation, shaped by three formants, syllabic gating."""
    t = _t(n, sr)
    f0_base = rng.uniform(90, 260)
    vib_rate, vib_depth = rng.uniform(4, 7), rng.uniform(0.005, 0.03)
    drift = 1 + 0.08 * np.sin(TWO_PI * rng.uniform(0.2, 0.6) * t + rng.uniform(0, TWO_PI))
    f0 = f0_base * drift * (1 + vib_depth * np.sin(TWO_PI * vib_rate * t))
    phase = TWO_PI * np.cumsum(f0) / sr
    formants = [(rng.uniform(300, 800), rng.uniform(60, 120)), (rng.uniform(900, 2000), rng.uniform(80, 150)),
                (rng.uniform(2200, 3000), rng.uniform(100, 200))]
    nyq = 0.9 * sr / 2
    out = np.zeros(n)
    for k in range(1, int(nyq / (f0_base * 1.1)) + 1):
        fk = k * f0
        env = sum(1.0 / (1.0 + ((fk - fc) / bw) ** 2) for fc, bw in formants if fc < nyq) + 0.02
        out += env / np.sqrt(k) * np.sin(k * phase) * (fk < nyq)
    return out * _smooth_gate(rng, n, sr, (0.15, 0.4), (0.03, 0.12), ramp_s=0.02)


def bird(rng, sr, n):
    """Bird-like song: short fast FM chirps (rising, falling or trilled) separated by gaps."""
    nyq = 0.9 * sr / 2
    out = np.zeros(n)
    pos = int(rng.uniform(0, 0.2) * sr)
    base = rng.uniform(1500, min(3200, nyq - 400))
    while pos < n:
        length = int(rng.uniform(0.04, 0.15) * sr)
        seg_t = _t(length, sr)
        sweep = rng.uniform(-1200, 1200)
        trill = rng.uniform(0, 300) * np.sin(TWO_PI * rng.uniform(20, 40) * seg_t)
        freq = np.clip(base + sweep * seg_t / seg_t[-1] + trill, 300, nyq)
        chirp = np.sin(TWO_PI * np.cumsum(freq) / sr) * np.hanning(length)
        end = min(n, pos + length)
        out[pos:end] += chirp[: end - pos]
        pos += length + int(rng.uniform(0.03, 0.25) * sr)
    return out


def noise_burst(rng, sr, n):
    """Band-limited noise bursts (steam, hiss, breath) with a random centre and bandwidth."""
    centre = rng.uniform(400, min(3000, 0.8 * sr / 2))
    width = rng.uniform(200, 1000)
    noise = _bandpass_noise(rng, n, sr, centre - width / 2, centre + width / 2)
    return noise * _smooth_gate(rng, n, sr, (0.1, 0.5), (0.05, 0.3), ramp_s=0.015)


def knock(rng, sr, n):
    """Decaying knocks: irregular impacts, each exciting a few damped low resonances plus a click."""
    out = np.zeros(n)
    modes = rng.uniform(120, 900, size=3)
    decays = rng.uniform(0.01, 0.05, size=3)
    length = int(0.3 * sr)
    t = _t(length, sr)
    pos = int(rng.uniform(0, 0.3) * sr)
    while pos < n:
        hit = sum(np.sin(TWO_PI * f * t) * np.exp(-t / d) for f, d in zip(modes, decays))
        hit[: int(0.002 * sr)] += rng.standard_normal(int(0.002 * sr))
        end = min(n, pos + length)
        out[pos:end] += rng.uniform(0.5, 1.0) * hit[: end - pos]
        pos += int(rng.uniform(0.15, 0.5) * sr)
    return out


def bell(rng, sr, n):
    """Inharmonic bell strikes: partials at non-integer ratios, higher ones decaying faster."""
    t = _t(n, sr)
    nyq = 0.9 * sr / 2
    f0 = rng.uniform(250, 700)
    ratios = np.array([0.5, 1.0, 1.19, 1.56, 2.0, 2.51, 2.66, 3.01, 4.1]) * rng.uniform(0.98, 1.02, size=9)
    decay = rng.uniform(0.4, 1.5)
    out = np.zeros(n)
    strike = 0.0
    while strike < n / sr:
        local = np.clip(t - strike, 0, None) * (t >= strike)
        for r in ratios:
            if f0 * r < nyq:
                out += (t >= strike) * np.sin(TWO_PI * f0 * r * local) * np.exp(-local * r / decay) / r**0.5
        strike += rng.uniform(0.6, 1.6)
    return out


def engine(rng, sr, n):
    """Engine hum: a low, slowly wandering fundamental with many harmonics, amplitude-modulated by firing."""
    t = _t(n, sr)
    f0 = rng.uniform(30, 70) * (1 + 0.05 * np.sin(TWO_PI * rng.uniform(0.1, 0.4) * t))
    phase = TWO_PI * np.cumsum(f0) / sr
    out = sum(np.sin(k * phase + rng.uniform(0, TWO_PI)) / k**0.7 for k in range(1, int(1500 / 70)))
    am = 1 + rng.uniform(0.3, 0.7) * np.sin(TWO_PI * rng.uniform(4, 12) * t)
    rumble = _bandpass_noise(rng, n, sr, 20, 400)
    return out * am + 2.0 * rumble * np.std(out) / (np.std(rumble) + 1e-9) * 0.3


def siren(rng, sr, n):
    """Siren: a few harmonics swept slowly up and down (wail) or switched between two pitches (hi-lo)."""
    t = _t(n, sr)
    centre, depth, rate = rng.uniform(700, 1300), rng.uniform(150, 450), rng.uniform(0.3, 1.5)
    sweep = np.sin(TWO_PI * rate * t + rng.uniform(0, TWO_PI))
    if rng.random() < 0.4:
        sweep = np.tanh(6 * sweep)
    freq = centre + depth * sweep
    phase = TWO_PI * np.cumsum(freq) / sr
    nyq = 0.9 * sr / 2
    return sum(np.sin(k * phase) * (k * freq < nyq) / k for k in (1, 2, 3))


def rain(rng, sr, n):
    """Rain-like crackle: dense random droplet impulses (short decaying noise) over a soft noise bed."""
    out = np.zeros(n)
    rate = rng.uniform(150, 600)
    count = rng.poisson(rate * n / sr)
    drop_len = max(4, int(0.003 * sr))
    drop = rng.standard_normal(drop_len) * np.exp(-np.arange(drop_len) / (0.0008 * sr))
    for pos, amp in zip(rng.integers(0, n - drop_len, size=count), rng.exponential(1.0, size=count)):
        out[pos : pos + drop_len] += amp * drop
    bed = _bandpass_noise(rng, n, sr, 1000, 0.85 * sr / 2)
    return out + 0.3 * bed * np.std(out) / (np.std(bed) + 1e-9)


CATEGORIES = {
    "voice": voice,
    "bird": bird,
    "noise_burst": noise_burst,
    "knock": knock,
    "bell": bell,
    "engine": engine,
    "siren": siren,
    "rain": rain,
}

TARGET_RMS_DB = -20.0


def render(category, rng, sr, seconds):
    """One clip of `category`: float32, RMS at -20 dBFS, peaks kept below 0.99 so 16-bit wav does not clip."""
    try:
        generator = CATEGORIES[category]
    except KeyError:
        raise ValueError(f"unknown synthetic category '{category}'; known: {', '.join(CATEGORIES)}") from None
    n = int(round(seconds * sr))
    x = generator(rng, sr, n)
    x = x * (10 ** (TARGET_RMS_DB / 20) / (np.sqrt(np.mean(x**2)) + 1e-12))
    peak = np.max(np.abs(x))
    if peak > 0.99:
        x *= 0.99 / peak
    return x.astype(np.float32)

import itertools

import numpy as np
import pytest
import torch

from local.config import load_config
from local.losses import make_loss


def numpy_si_sdr(est, ref):
    """Independent SI-SDR (Le Roux et al. 2019) on zero-mean signals."""
    est, ref = est - est.mean(), ref - ref.mean()
    target = (est @ ref) / (ref @ ref) * ref
    return 10 * np.log10((target @ target) / ((est - target) @ (est - target)))


def _loss(name, pit, n_src=2):
    return make_loss(load_config("lstm_2src", [f"loss.name={name}", f"loss.pit={str(pit).lower()}", f"data.n_src={n_src}"]))


def test_sisdr_loss_matches_numpy_formula():
    torch.manual_seed(0)
    ref = torch.randn(2, 2, 1000, dtype=torch.float64)
    est = ref + 0.3 * torch.randn_like(ref)
    expected = -np.mean([numpy_si_sdr(est[b, i].numpy(), ref[b, i].numpy()) for b in range(2) for i in range(2)])
    got = _loss("sisdr", pit=False)(est, ref).item()
    assert got == pytest.approx(expected, abs=1e-6)


def test_euclidean_loss_matches_magnitude_mse():
    torch.manual_seed(0)
    ref, est = torch.randn(2, 2, 2000), torch.randn(2, 2, 2000)
    loss = _loss("euclidean", pit=False)
    mags = lambda x: loss.pairwise_loss.magnitude(x)
    expected = ((mags(est) - mags(ref)) ** 2).mean()
    assert loss(est, ref).item() == pytest.approx(expected.item(), rel=1e-5)
    # and the magnitude is Asteroid's scaled |STFT| with a sqrt-Hann window, checked with numpy's FFT
    frame = ref[0, 0, 64:320].numpy().astype(np.float64)
    spec = mags(ref)[0, 0, :, 1].numpy()
    window = np.hanning(257)[:256] ** 0.5
    expected = np.abs(np.fft.rfft(frame * window)) / (0.5 * np.sqrt(256 * 256 / 64))
    expected[[0, -1]] /= np.sqrt(2)
    np.testing.assert_allclose(spec, expected, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("name", ["euclidean", "sisdr"])
@pytest.mark.parametrize("n_src", [2, 3, 5])
def test_pit_loss_is_invariant_to_reference_order(name, n_src):
    torch.manual_seed(1)
    ref = torch.randn(2, n_src, 1600)
    est = ref + 0.5 * torch.randn_like(ref)
    loss = _loss(name, pit=True, n_src=n_src)
    base = loss(est, ref).item()
    for perm in list(itertools.permutations(range(n_src)))[:: max(1, len(list(itertools.permutations(range(n_src)))) // 6)]:
        assert loss(est, ref[:, list(perm)]).item() == pytest.approx(base, rel=1e-5)
    # and it is the minimum: the fixed-order loss of the matching order
    assert base == pytest.approx(_loss(name, pit=False, n_src=n_src)(est, ref).item(), rel=1e-5)


def test_fixed_order_loss_sees_swapped_references():
    torch.manual_seed(2)
    ref = torch.randn(1, 2, 1600)
    est = ref + 0.1 * torch.randn_like(ref)
    fixed = _loss("sisdr", pit=False)
    assert fixed(est, ref[:, [1, 0]]).item() > fixed(est, ref).item() + 10

import itertools

import numpy as np
import pytest
import torch

from local.common.config import load_config
from local.common.errors import RecipeError
from local.training.losses import make_loss


def numpy_si_sdr(est, ref):
    """Independent SI-SDR (Le Roux et al. 2019) on zero-mean signals."""
    est, ref = est - est.mean(), ref - ref.mean()
    target = (est @ ref) / (ref @ ref) * ref
    return 10 * np.log10((target @ target) / ((est - target) @ (est - target)))


def _loss(name, pit, n_src=2, gamma=0.05):
    return make_loss(load_config("lstm_2src", [f"loss.name={name}", f"loss.pit={str(pit).lower()}",
                                               f"data.n_src={n_src}", f"loss.gamma={gamma}"]))


def _mags(loss, x):
    pairwise = loss.pairwise_loss if hasattr(loss, "pairwise_loss") else loss.loss_func
    return getattr(pairwise, "euclidean", pairwise).features(x)


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
    expected = ((_mags(loss, est) - _mags(loss, ref)) ** 2).mean()
    assert loss(est, ref).item() == pytest.approx(expected.item(), rel=1e-5)
    # and the magnitude is Asteroid's scaled |STFT| with a sqrt-Hann window, checked with numpy's FFT
    frame = ref[0, 0, 64:320].numpy().astype(np.float64)
    spec = _mags(loss, ref)[0, 0, :, 1].numpy()
    window = np.hanning(257)[:256] ** 0.5
    expected = np.abs(np.fft.rfft(frame * window)) / (0.5 * np.sqrt(256 * 256 / 64))
    expected[[0, -1]] /= np.sqrt(2)
    np.testing.assert_allclose(spec, expected, rtol=1e-3, atol=1e-5)


def test_correlation_loss_is_one_minus_pearson():
    torch.manual_seed(3)
    ref = torch.randn(2, 3, 2000)
    est = ref + torch.randn_like(ref)
    loss = _loss("correlation", pit=False, n_src=3)
    e, r = _mags(loss, est).numpy(), _mags(loss, ref).numpy()
    expected = np.mean([1 - np.corrcoef(e[b, i].ravel(), r[b, i].ravel())[0, 1] for b in range(2) for i in range(3)])
    assert loss(est, ref).item() == pytest.approx(expected, abs=1e-5)
    # scale and offset of an estimate's spectrogram do not matter; a perfect estimate scores 0
    assert loss(3.0 * ref, ref).item() == pytest.approx(0.0, abs=1e-5)


def test_discriminative_loss_matches_huang_formula():
    """2 sources: ||e1-r1||^2 - g||e1-r2||^2 + ||e2-r2||^2 - g||e2-r1||^2 (as means over bins), averaged."""
    torch.manual_seed(4)
    ref, est = torch.randn(1, 2, 2000), torch.randn(1, 2, 2000)
    gamma = 0.3
    loss = _loss("discriminative", pit=False, gamma=gamma)
    e, r = _mags(loss, est), _mags(loss, ref)
    d = lambda i, j: ((e[0, i] - r[0, j]) ** 2).mean().item()
    expected = (d(0, 0) - gamma * d(0, 1) + d(1, 1) - gamma * d(1, 0)) / 2
    assert loss(est, ref).item() == pytest.approx(expected, rel=1e-5)
    assert _loss("discriminative", pit=False, gamma=0.0)(est, ref).item() == pytest.approx(
        _loss("euclidean", pit=False)(est, ref).item(), rel=1e-6)


@pytest.mark.parametrize("name", ["euclidean", "correlation", "discriminative", "sisdr"])
@pytest.mark.parametrize("n_src", [2, 3, 5])
def test_minloss_is_the_minimum_over_permutations_and_invariant(name, n_src):
    torch.manual_seed(1)
    ref = torch.randn(2, n_src, 1600)
    est = ref[:, torch.randperm(n_src)] + 0.8 * torch.randn_like(ref)
    minloss = _loss(name, pit=True, n_src=n_src)
    fixed = _loss(name, pit=False, n_src=n_src)
    perms = list(itertools.permutations(range(n_src)))
    assert len(perms) == {2: 2, 3: 6, 5: 120}[n_src]
    # independent brute force: per mixture, the best of every assignment of the fixed-order loss
    brute = np.mean([min(fixed(est[b : b + 1], ref[b : b + 1, list(p)]).item() for p in perms) for b in range(2)])
    base = minloss(est, ref).item()
    assert base == pytest.approx(brute, rel=1e-4, abs=1e-5)
    for perm in perms[:: max(1, len(perms) // 8)]:
        assert minloss(est, ref[:, list(perm)]).item() == pytest.approx(base, rel=1e-4, abs=1e-5)


def test_fixed_order_loss_sees_swapped_references():
    torch.manual_seed(2)
    ref = torch.randn(1, 2, 1600)
    est = ref + 0.1 * torch.randn_like(ref)
    fixed = _loss("sisdr", pit=False)
    assert fixed(est, ref[:, [1, 0]]).item() > fixed(est, ref).item() + 10


def test_complex_domain_sees_the_phase():
    """A sign flip leaves magnitudes unchanged: only the complex-domain losses penalise it."""
    torch.manual_seed(5)
    ref = torch.randn(1, 2, 2000)
    assert _loss("euclidean", pit=False)(-ref, ref).item() == pytest.approx(0.0, abs=1e-6)
    for domain in ("complex", "compressed"):
        loss = make_loss(load_config("gab_2src", [f"loss.domain={domain}"]))
        assert loss.pairwise_loss.domain == domain
        assert loss(-ref, ref).item() > 0.1 * loss(torch.zeros_like(ref), ref).item()


def test_gab_cells_train_on_the_compressed_looking_to_listen_objective():
    """Ephrat et al. 2018: L2 between |S|^0.3 e^{j angle S} of estimate and reference, computed here with
    torch.stft as an independent check of Asteroid's STFT and of the compression."""
    torch.manual_seed(6)
    cfg = load_config("gab_2src")
    assert cfg["loss"]["domain"] == "compressed" and cfg["loss"]["compression"] == 0.3
    ref, est = torch.randn(1, 2, 2000), torch.randn(1, 2, 2000)
    loss = make_loss(cfg)
    fb = cfg["filterbank"]
    window = torch.hann_window(fb["kernel_size"])

    def compressed(x):
        spec = torch.stft(x, fb["n_filters"], fb["stride"], fb["kernel_size"], window=window, center=False,
                          return_complex=True)
        return spec.abs() ** 0.3 * torch.exp(1j * spec.angle())

    e, r = compressed(est[0]), compressed(ref[0])
    # Asteroid's STFT filterbank scales the transform differently from torch.stft: compare ratios, which
    # the scale leaves unchanged only if both sides compress |S| by the same power.
    ratio_ours = loss(est, ref).item() / loss(est, torch.zeros_like(ref)).item()
    ratio_here = ((e - r).abs() ** 2).mean().item() / (e.abs() ** 2).mean().item()
    assert ratio_ours == pytest.approx(ratio_here, rel=0.05)


def test_correlation_loss_gradient_stays_finite_for_a_constant_spectrogram():
    torch.manual_seed(7)
    ref = torch.randn(1, 2, 2000)
    est = (1e-6 * torch.randn(1, 2, 2000)).requires_grad_()
    loss = _loss("correlation", pit=False)
    loss(est, ref).backward()
    assert torch.isfinite(est.grad).all() and est.grad.abs().max() < 1e6


def test_unknown_loss_is_refused():
    with pytest.raises(RecipeError, match="loss.name = 'l1'.*expected one of euclidean"):
        _loss("l1", pit=False)

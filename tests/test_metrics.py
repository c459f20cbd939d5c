"""Every evaluation figure against a definition written here, per source and per row: SI-SDR and its
improvement (model and oracle masks), SDR/SIR/SAR on the SI-SDR assignment, the two BSS-eval backends,
the oracle masks' formulas, PESQ means over scored sources, and the bootstrap intervals."""
import itertools

import numpy as np
import pytest
import torch

from local.evaluation.evaluate import score_mixture
from local.evaluation.metrics import bss_eval, source_metrics
from local.evaluation.oracle import OracleMasks
from local.evaluation.uncertainty import bootstrap_ci, paired_difference


def numpy_si_sdr(reference, estimate):
    """Le Roux et al. 2019, Eq. 1-4, with zero-mean signals: 10 log10 |a s|^2 / |a s - e|^2, a = <e, s> / |s|^2."""
    s = reference - reference.mean()
    e = estimate - estimate.mean()
    target = (e @ s) / (s @ s) * s
    return 10 * np.log10((target @ target) / ((e - target) @ (e - target)))


def random_case(rng, n_src, length=4000, leak=0.5):
    sources = rng.standard_normal((n_src, length)) * rng.uniform(0.2, 1.0, (n_src, 1))
    mixing = np.eye(n_src) + leak * rng.uniform(0, 1, (n_src, n_src))
    estimates = mixing @ sources + 0.1 * rng.standard_normal((n_src, length))
    return sources, estimates


def job(mixture, sources, estimates, oracles, metrics=("si_sdr", "sdr", "sir", "sar"), fixed_order=None, perm=None):
    n = len(sources)
    meta = {"mixture_id": "m", "labels": [f"c{i}" for i in range(n)], "permutation": perm or list(range(n)),
            "overlap_seconds": 1.0}
    return {"index": 0, "meta": meta, "mixture": mixture, "sources": sources, "estimates": estimates,
            "oracles": oracles, "sample_rate": 8000, "metrics": list(metrics), "backend": "fast_bss_eval",
            "fixed_order": fixed_order}


def test_per_source_si_sdri_and_oracle_columns_match_an_independent_formula():
    rng = np.random.default_rng(0)
    for n_src in (2, 3, 5):
        sources, estimates = random_case(rng, n_src)
        mixture = sources.sum(0)
        oracles = {"psm": estimates * 0.9 + 0.1 * sources, "ibm": sources + 0.3 * rng.standard_normal(sources.shape)}
        _, row, src_rows, _ = score_mixture(job(mixture, sources, estimates, oracles))
        for i, src in enumerate(src_rows):
            base = numpy_si_sdr(sources[i], mixture)
            assert src["input_si_sdr"] == pytest.approx(base, abs=1e-4)
            assert src["si_sdri"] == pytest.approx(numpy_si_sdr(sources[i], estimates[i]) - base, abs=1e-4)
            for kind, est in oracles.items():  # each source against its own input figure (the old bug: input[0])
                assert src[f"oracle_{kind}_si_sdri"] == pytest.approx(numpy_si_sdr(sources[i], est[i]) - base, abs=1e-4)
        assert row["oracle_psm_si_sdri"] == pytest.approx(np.mean([r["oracle_psm_si_sdri"] for r in src_rows]))


@pytest.mark.parametrize("n_src", [2, 3])
def test_sdr_is_computed_on_the_si_sdr_assignment_not_bss_evals_own(n_src):
    """Each estimate is a delayed copy of another source plus half of its own. BSS-eval's 512-tap filters
    take the delayed copy as a target, so mir_eval's own (SIR-maximising) permutation pairs each estimate
    with the other source; SI-SDR, which allows no filter, pairs it with its own. SDR/SIR/SAR must be those
    of the SI-SDR assignment (the permutation column), not of BSS-eval's."""
    from mir_eval.separation import bss_eval_sources

    rng = np.random.default_rng(n_src)
    sources = rng.standard_normal((n_src, 4000))
    shifted = np.roll(sources, 1, axis=0)  # estimate i carries source i - 1
    estimates = np.stack([np.concatenate([np.zeros(100), x[:-100]]) for x in shifted]) + 0.5 * sources
    mixture = sources.sum(0)
    si = np.array([[numpy_si_sdr(sources[j], estimates[i]) for j in range(n_src)] for i in range(n_src)])
    best = max(itertools.permutations(range(n_src)), key=lambda p: sum(si[p[j], j] for j in range(n_src)))
    assert list(best) == list(range(n_src))
    own_sdr, _, _, own = bss_eval_sources(sources, estimates, compute_permutation=True)
    assert list(own) != list(best)  # the case this test is about
    _, row, src_rows, _ = score_mixture(job(mixture, sources, estimates, {}))
    sdr, sir, sar, _ = bss_eval_sources(sources, estimates, compute_permutation=False)
    for i, src in enumerate(src_rows):
        assert (src["sdr"], src["sir"], src["sar"]) == pytest.approx((sdr[i], sir[i], sar[i]), abs=0.01)
    assert row["sdr"] < np.mean(own_sdr) - 3  # BSS-eval's own pairing would have looked far better


@pytest.mark.parametrize("n_src", [2, 3, 5])
def test_fast_bss_eval_matches_pb_bss_eval_within_a_hundredth_of_a_db(n_src):
    rng = np.random.default_rng(n_src)
    cases = {2: 20, 3: 20, 5: 10}[n_src]  # 50 cases in all
    for _ in range(cases):
        sources, estimates = random_case(rng, n_src, length=2400, leak=rng.uniform(0.05, 1.0))
        fast = bss_eval(sources, estimates, "fast_bss_eval")
        slow = bss_eval(sources, estimates, "pb_bss_eval")
        for key in ("sdr", "sir", "sar"):
            np.testing.assert_allclose(fast[key], slow[key], atol=0.01, err_msg=key)
        # stage 3's path: the model's and the input figures from one fast_bss_eval pass
        names = ["si_sdr", "sdr", "sir", "sar"]
        mixture = sources.sum(0)
        combined = source_metrics(mixture, sources, estimates, 8000, names, "fast_bss_eval")
        separate = source_metrics(mixture, sources, estimates, 8000, names, "pb_bss_eval")
        assert set(combined) == set(separate) and "input_sar" not in combined
        for key in combined:
            np.testing.assert_allclose(combined[key], separate[key], atol=0.01, err_msg=key)


def test_sources_that_never_overlap_get_a_finite_sir_on_both_backends():
    """Two sounds in disjoint halves, each estimate its own source scaled plus a little noise where it plays: no
    interference at all, an infinite SIR by definition (fast_bss_eval: inf, mir_eval: about 318 dB). Both report the
    150 dB ceiling; SDR and SAR are untouched: equal (no interference), the same on both backends, and at least the
    plain target-to-noise ratio (the 512-tap distortion filter may count part of the noise as target)."""
    rng = np.random.default_rng(0)
    sources = np.zeros((2, 4000))
    sources[0, :1500], sources[1, 2500:] = rng.standard_normal(1500), rng.standard_normal(1500)
    noise = 1e-3 * rng.standard_normal((2, 4000)) * (sources != 0)
    estimates = sources * np.array([[0.9], [1.1]]) + noise
    expected_sdr = [10 * np.log10(np.sum((g * s) ** 2) / np.sum(n ** 2)) for g, s, n in zip((0.9, 1.1), sources, noise)]
    both = {}
    for backend in ("fast_bss_eval", "pb_bss_eval"):
        figures = both[backend] = source_metrics(sources.sum(0), sources, estimates, 8000,
                                                 ["si_sdr", "sdr", "sir", "sar"], backend)
        assert figures["sir"].tolist() == [150.0, 150.0], backend
        np.testing.assert_allclose(figures["sdr"], figures["sar"], atol=1e-6, err_msg=backend)
        assert (figures["sdr"] >= np.array(expected_sdr) - 0.01).all() and (figures["sdr"] < 100).all(), backend
        assert all(np.isfinite(v).all() for v in figures.values())
    np.testing.assert_allclose(both["fast_bss_eval"]["sdr"], both["pb_bss_eval"]["sdr"], atol=0.01)


def test_fixed_order_figures_and_permutation_flag():
    rng = np.random.default_rng(2)
    sources, estimates = random_case(rng, 2, leak=0.2)
    swapped = estimates[::-1].copy()  # the model put the sources in the wrong slots
    _, row, src_rows, _ = score_mixture(job(sources.sum(0), sources, estimates, {}, fixed_order=swapped, perm=[1, 0]))
    assert row["permuted"] == 1
    for i, src in enumerate(src_rows):
        expected = numpy_si_sdr(sources[i], swapped[i]) - numpy_si_sdr(sources[i], sources.sum(0))
        assert src["fixed_order_si_sdri"] == pytest.approx(expected, abs=1e-3)
        assert src["fixed_order_si_sdri"] < src["si_sdri"]


def test_oracle_masks_follow_their_formulas():
    torch.manual_seed(0)
    oracle = OracleMasks(n_filters=64, kernel_size=64, stride=16, sample_rate=8000)
    mix_tf, src_tf = torch.randn(1, 66, 20), torch.randn(3, 66, 20)
    re, im = src_tf[:, :33], src_tf[:, 33:]
    x_re, x_im = mix_tf[:, :33], mix_tf[:, 33:]
    mag_s = torch.sqrt(re ** 2 + im ** 2)
    mag_x = torch.sqrt(x_re ** 2 + x_im ** 2)
    cos = (re * x_re + im * x_im) / (mag_s * mag_x)
    torch.testing.assert_close(oracle.masks(mix_tf, src_tf, "psm"), (mag_s / mag_x * cos).clamp(0, 1),
                               atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(oracle.masks(mix_tf, src_tf, "ratio"), mag_s / mag_s.sum(0), atol=1e-5, rtol=1e-5)
    ibm = oracle.masks(mix_tf, src_tf, "ibm")
    assert torch.equal(ibm.argmax(0), mag_s.argmax(0)) and torch.equal(ibm.sum(0), torch.ones(33, 20))


def test_phase_sensitive_mask_is_the_best_unit_interval_mask_per_bin():
    """Per bin, |m X - S|^2 over m in [0, 1] is smallest at the truncated PSM (checked on a grid of m)."""
    torch.manual_seed(1)
    oracle = OracleMasks(n_filters=16, kernel_size=16, stride=4, sample_rate=8000)
    mix_tf, src_tf = torch.randn(1, 18, 5), torch.randn(2, 18, 5)
    psm = oracle.masks(mix_tf, src_tf, "psm")
    grid = torch.linspace(0, 1, 201).view(-1, 1, 1, 1)
    err = lambda m: (m * mix_tf[:, :9] - src_tf[:, :9]) ** 2 + (m * mix_tf[:, 9:] - src_tf[:, 9:]) ** 2
    best_on_grid = err(grid).min(dim=0).values
    assert torch.all(err(psm) <= best_on_grid + 1e-6)


def test_pesq_mean_keeps_a_mixture_with_one_unscored_source():
    from local.evaluation.evaluate import _mean

    assert _mean([2.0, np.nan]) == 2.0 and np.isnan(_mean([np.nan, np.nan]))


def test_bootstrap_interval_agrees_with_the_normal_approximation():
    rng = np.random.default_rng(3)
    values = rng.normal(10.0, 4.0, 400)
    low, high = bootstrap_ci(values, 2000, seed=0)
    half = 1.96 * values.std(ddof=1) / np.sqrt(len(values))
    assert low < values.mean() < high
    assert (high - low) / 2 == pytest.approx(half, rel=0.15)
    assert bootstrap_ci(values, 2000, seed=0) == (low, high)  # seeded


def test_paired_difference_is_tighter_than_separate_intervals():
    rng = np.random.default_rng(4)
    a = rng.normal(10.0, 4.0, 200)
    b = a + 0.3 + rng.normal(0, 0.5, 200)  # same mixtures: b wins by 0.3 dB with small per-mixture noise
    diff = paired_difference(a, b)
    assert diff["mean"] == pytest.approx(np.mean(b - a)) and diff["n"] == 200
    assert 0 < diff["ci95"][0] < 0.3 < diff["ci95"][1]
    low_a, high_a = bootstrap_ci(a)
    assert diff["ci95"][1] - diff["ci95"][0] < (high_a - low_a) / 3

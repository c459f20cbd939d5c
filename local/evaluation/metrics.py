"""Per-source separation metrics, every one on the same, given assignment of estimates to references.

- SI-SDR (Le Roux et al. 2019, "SDR - half-baked or well done?"): pb_bss_eval's `si_sdr` (zero mean).
- SDR, SIR, SAR: BSS-eval v3 (Vincent, Gribonval and Fevotte 2006) with 512-tap distortion filters, as
  mir_eval's `bss_eval_sources`, computed by `eval.bss_backend`:
    fast_bss_eval  Scheibler 2021, "SDR - medium rare with fast computations" (ESPnet's choice): the same
                   figures from a direct solve of the same normal equations, several times faster;
    pb_bss_eval    pb_bss_eval's mir_eval path (mir_eval itself).
  Both score estimate j against reference j only (no permutation search), so SDR/SIR/SAR refer to the
  assignment the caller chose (the one that maximises SI-SDR), at K projections per mixture instead of K^2.
  With fast_bss_eval, the estimates and the mixture (for the input figures) share one solve: the systems
  depend only on the references (`fast_bss_eval_with_input`). (Asteroid's `get_metrics` lets mir_eval pick its own
  SIR-maximising permutation, which can differ from the SI-SDR one on poorly separated mixtures.)
- STOI (Taal et al. 2011) through pb_bss_eval (pystoi), and PESQ (ITU-T P.862) per source, for speech.

SDR, SIR and SAR are clamped to +-150 dB (as fast_bss_eval's `clamp_db` does), beyond what float32 audio resolves
(about 144 dB): an estimate with no trace of the other sources, such as a gated hit that never overlaps the other
sound, has an infinite SIR (fast_bss_eval) or a numerical 300-odd dB (mir_eval), which would make every mean over
sources infinite or arbitrary (and `Infinity` is not JSON).

The input figures (`input_*`) score the mixture itself as every source's estimate. There is no input SAR: the
mixture lies exactly in the span of the references, so its SAR is infinite (numerical noise in practice).
"""
import contextlib

import numpy as np

BSS_BACKENDS = ("fast_bss_eval", "pb_bss_eval")
BSS_METRICS = ("sdr", "sir", "sar")
BSS_CLAMP_DB = 150.0  # the largest SDR/SIR/SAR magnitude reported (see above)
PESQ_RATES = (8000, 16000)  # narrow band and wide band


@contextlib.contextmanager
def one_torch_thread():
    """fast_bss_eval's solves in one torch thread: with several, torch 2.11's batched `linalg.solve` fails here
    ("Pivots given to lu_solve must all be greater or equal to 1", an MKL DLASWP error). The metric workers
    run one thread anyway, so every --nj computes the same figures."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def si_sdr(references, estimates):
    """SI-SDR in dB of estimate j against reference j; references, estimates [K, T] -> [K]."""
    from pb_bss_eval.evaluation import si_sdr as _si_sdr

    return np.asarray(_si_sdr(references, estimates), dtype=float).reshape(-1)


def bss_eval(references, estimates, backend="fast_bss_eval"):
    """{sdr, sir, sar: [K]} of estimate j against reference j (no permutation search)."""
    references = np.asarray(references, dtype=np.float64)
    estimates = np.asarray(estimates, dtype=np.float64)
    if backend == "fast_bss_eval":
        import fast_bss_eval
        import torch

        # Torch tensors: fast_bss_eval's numpy path calls np.linalg.solve with a batch layout that numpy 2 reads
        # differently (it fails); its torch path computes the same figures.
        with one_torch_thread():
            sdr, sir, sar = (x.numpy() for x in fast_bss_eval.bss_eval_sources(
                torch.from_numpy(references), torch.from_numpy(estimates), filter_length=512, use_cg_iter=None,
                zero_mean=False, compute_permutation=False))
    elif backend == "pb_bss_eval":
        from pb_bss_eval.evaluation import mir_eval_sources

        sdr, sir, sar = mir_eval_sources(references, estimates, compute_permutation=False)
    else:
        raise ValueError(f"unknown BSS-eval backend {backend!r}; known: {', '.join(BSS_BACKENDS)}")
    return {k: np.clip(np.asarray(v, dtype=float), -BSS_CLAMP_DB, BSS_CLAMP_DB)
            for k, v in (("sdr", sdr), ("sir", sir), ("sar", sar))}


def _sdr_from_coherence(coherence):
    """BSS-eval's ratio in dB from a square cosine c (the share of energy in the projection): 10 log10 c / (1 - c),
    as fast_bss_eval converts it (c clamped to [0, 1]), within +-BSS_CLAMP_DB."""
    c = np.clip(np.asarray(coherence, dtype=np.float64), 0.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.clip(10.0 * np.log10(c / (1.0 - c)), -BSS_CLAMP_DB, BSS_CLAMP_DB)


def fast_bss_eval_with_input(references, estimates, mixture):
    """({sdr, sir, sar} of estimate j against reference j, the same of the mixture against reference j) from one
    fast_bss_eval pass: the mixture is one more estimate column of the same systems, whose matrices depend only
    on the references (the Toeplitz system of each reference for SDR, the block-Toeplitz system of all for SAR).
    The exact solve (no conjugate gradient), as mir_eval."""
    import torch
    from fast_bss_eval.torch.metrics import square_cosine_metrics

    refs = torch.from_numpy(np.asarray(references, dtype=np.float64))
    ests = torch.from_numpy(np.concatenate([np.asarray(estimates, dtype=np.float64),
                                            np.asarray(mixture, dtype=np.float64)[None]]))
    with one_torch_thread():
        coh_sdr, coh_sar = square_cosine_metrics(refs, ests, filter_length=512, use_cg_iter=None, zero_mean=False,
                                                 pairwise=True)  # [K, K + 1]: reference x estimate
    k = len(references)
    own = np.arange(k)
    out, inputs = {}, {}
    for target, column in ((out, own), (inputs, np.full(k, k))):
        sdr_c, sar_c = coh_sdr.numpy()[own, column], coh_sar.numpy()[own, column]
        target.update(sdr=_sdr_from_coherence(sdr_c), sir=_sdr_from_coherence(sdr_c / sar_c),
                      sar=_sdr_from_coherence(sar_c))
    return out, inputs


def stoi(references, estimates, sample_rate):
    from pb_bss_eval.evaluation import stoi as _stoi

    return np.asarray(_stoi(references, estimates, sample_rate=sample_rate), dtype=float).reshape(-1)


def pesq_scores(references, estimates, sample_rate):
    """PESQ (narrow band at 8 kHz, wide band at 16 kHz) of each estimate against its reference, NaN where
    PESQ finds no utterance to score, instead of failing the mixture."""
    import pesq

    mode = {8000: "nb", 16000: "wb"}[sample_rate]
    scores = [pesq.pesq(sample_rate, ref, est, mode, on_error=pesq.PesqError.RETURN_VALUES)
              for ref, est in zip(references, estimates)]
    return np.array([s if s >= -0.5 else np.nan for s in scores], dtype=float)  # error codes are negative integers


def _scores(references, estimates, sample_rate, metrics, backend):
    out = {}
    if "si_sdr" in metrics:
        out["si_sdr"] = si_sdr(references, estimates)
    if any(m in metrics for m in BSS_METRICS):
        out.update({k: v for k, v in bss_eval(references, estimates, backend).items() if k in metrics})
    if "stoi" in metrics:
        out["stoi"] = stoi(references, estimates, sample_rate)
    if "pesq" in metrics:
        out["pesq"] = pesq_scores(references, estimates, sample_rate)
    return out


def source_metrics(mixture, references, estimates, sample_rate, metrics, backend="fast_bss_eval"):
    """{metric: [K], input_<metric>: [K]}: estimates [K, T] already in the order of references [K, T]."""
    inputs = np.broadcast_to(mixture, references.shape)
    bss = [m for m in metrics if m in BSS_METRICS]
    if backend == "fast_bss_eval" and bss:  # one pass for the model's and the input figures
        plain = [m for m in metrics if m not in BSS_METRICS]
        model_bss, input_bss = fast_bss_eval_with_input(references, estimates, mixture)
        out = {f"input_{k}": v for k, v in _scores(references, inputs, sample_rate, plain, backend).items()}
        out.update({f"input_{k}": input_bss[k] for k in bss if k != "sar"})
        out.update(_scores(references, estimates, sample_rate, plain, backend))
        out.update({k: model_bss[k] for k in bss})
        return out
    out = {f"input_{k}": v for k, v in _scores(references, inputs, sample_rate, metrics, backend).items()}
    out.update(_scores(references, estimates, sample_rate, metrics, backend))
    out.pop("input_sar", None)
    return out

"""Training objectives on waveform estimates [B, n_src, T] against references [B, n_src, T].

Every loss is written in its *pairwise* form (a [B, n_src, n_src] matrix of the loss of estimate i
against reference j), so that the same function serves both assignments:
  - permutation invariant (`loss.pit: true`): Asteroid's `PITLossWrapper(pit_from="pw_mtx")` takes the
    best assignment (the "MinLoss" of the category study; Yu et al. 2017, "Permutation invariant
    training of deep models for speaker-independent multi-talker speech separation");
  - fixed order (`loss.pit: false`): estimate i is scored against reference i, the order of the view
    CSV's sources (the diagonal of the matrix).

Losses (spectrogram losses use Asteroid's STFT at the experiment's filterbank settings, on magnitudes
or, with `loss.domain: complex`, on real and imaginary parts):
  euclidean       mean squared distance between estimated and reference spectrograms.
  correlation     1 - Pearson correlation between estimated and reference spectrograms, per
                  source (the category study's correlation objective): insensitive to the scale and
                  offset of an estimate, it rewards getting the spectro-temporal shape right.
  discriminative  Huang et al. 2014/2015: the euclidean distance to the own reference minus gamma times
                  the mean distance to the other references, which pushes an estimate away from the
                  other sources (gamma = loss.gamma; 0 gives euclidean).
  sisdr           negative scale-invariant SDR (Le Roux et al. 2019, "SDR - half-baked or well done?"),
                  Asteroid's `pairwise_neg_sisdr`.
  deep_clustering the objective of DPCL-DPRNN (and Chimera++ with a mask-inference head); it needs the
                  model's embeddings, not waveforms (see DeepClusteringObjective).
"MinLoss" is any of the waveform losses with `loss.pit: true`: the minimum over the n_src! assignments, found by
Asteroid's PITLossWrapper (exhaustively up to 3 sources, by the Hungarian algorithm from 4 on).
"""
import torch
from asteroid.dsp.vad import ebased_vad
from asteroid.losses import PITLossWrapper, pairwise_neg_sisdr
from asteroid_filterbanks import Encoder, STFTFB
from asteroid_filterbanks.transforms import mag
from torch import nn

from local.common.errors import RecipeError


class PairwiseEuclideanSpectrogram(nn.Module):
    """Pairwise mean squared error between spectrograms: out[b, i, j] = mean_{f,t} (S(E_i) - S(R_j))^2.

    S is the magnitude STFT (`domain="magnitude"`) or the complex STFT as real and imaginary parts
    (`domain="complex"`). Complex-mask models (GAB) need the complex domain: a magnitude loss leaves the
    phase their masks apply unconstrained.
    """

    def __init__(self, n_filters, kernel_size, stride, sample_rate, domain="magnitude"):
        super().__init__()
        if domain not in ("magnitude", "complex"):
            raise RecipeError(f"loss.domain must be magnitude or complex, got {domain!r}")
        self.domain = domain
        self.stft = Encoder(STFTFB(n_filters=n_filters, kernel_size=kernel_size, stride=stride, sample_rate=sample_rate))

    def features(self, wav):
        """[B, n_src, T] -> [B, n_src, F (or 2F), frames]."""
        batch, n_src, time = wav.shape
        spec = self.stft(wav.reshape(batch * n_src, 1, time))
        if self.domain == "magnitude":
            spec = mag(spec)
        return spec.reshape(batch, n_src, *spec.shape[1:])

    def forward(self, est, ref):
        e, r = self.features(est), self.features(ref)
        return ((e.unsqueeze(2) - r.unsqueeze(1)) ** 2).mean(dim=(-2, -1))


class PairwiseCorrelationSpectrogram(PairwiseEuclideanSpectrogram):
    """out[b, i, j] = 1 - Pearson r between the spectrograms of E_i and R_j over all bins and frames."""

    def forward(self, est, ref):
        def standardise(x):
            x = x.flatten(start_dim=2)
            x = x - x.mean(dim=-1, keepdim=True)
            return x / (x.norm(dim=-1, keepdim=True) + 1e-8)

        e, r = standardise(self.features(est)), standardise(self.features(ref))
        return 1.0 - torch.einsum("bif,bjf->bij", e, r)


class PairwiseDiscriminative(nn.Module):
    """Huang et al.'s discriminative objective in pairwise form, so that PIT can assign it.

    For an assignment pi, L = sum_i [D(i, pi(i)) - gamma / (n - 1) * sum_{k != pi(i)} D(i, k)], with D the
    pairwise euclidean matrix. Writing R_i = sum_k D(i, k), each term is
    D'(i, j) = (1 + g) D(i, j) - g R_i with g = gamma / (n - 1): a pairwise matrix whose assigned sum is L.
    """

    def __init__(self, euclidean, gamma):
        super().__init__()
        self.euclidean, self.gamma = euclidean, float(gamma)

    def forward(self, est, ref):
        d = self.euclidean(est, ref)
        g = self.gamma / max(d.shape[1] - 1, 1)
        return (1 + g) * d - g * d.sum(dim=2, keepdim=True)


class FixedOrderLoss(nn.Module):
    """Mean of the diagonal of a pairwise loss: estimate i is always scored against reference i."""

    def __init__(self, pairwise_loss):
        super().__init__()
        self.pairwise_loss = pairwise_loss

    def forward(self, est, ref):
        return torch.diagonal(self.pairwise_loss(est, ref), dim1=1, dim2=2).mean()


def deep_clustering_loss(embedding, target, weights, n_src):
    """Deep-clustering loss in its low-rank form (Hershey et al. 2016; Wang, Le Roux, Hershey 2018):

        || V^T W V ||^2 - 2 || V^T W Y ||^2 + || Y^T W Y ||^2   ==   || W^1/2 (V V^T - Y Y^T) W^1/2 ||^2_F

    with V [N, D] the embeddings, Y [N, n_src] the one-hot dominant source of every bin and W the bin
    weights (1 for active bins, 0 for silent ones), divided by (sum W)^2 per utterance so that the
    value does not grow with the utterance length (the affinity matrix has N^2 entries), then averaged.
    Memory grows linearly with N: the N x N affinity matrix is never built.

    Written here rather than taken from Asteroid's `deep_clustering_loss` because that one counts the
    sources as the distinct target indices in the batch (wrong when a source dominates no bin) and
    divides by the active-bin count, not its square, so its scale depends on the utterance length.

    Args: embedding [B, N, D]; target [B, N] long in 0..n_src-1; weights [B, N]; n_src int.
    """
    root_w = weights.clamp(min=0).sqrt().unsqueeze(-1)
    v = embedding * root_w
    y = torch.nn.functional.one_hot(target, n_src).to(embedding.dtype) * root_w
    frob = lambda a, b: (a.transpose(1, 2) @ b).pow(2).sum(dim=(1, 2))
    cost = frob(v, v) - 2 * frob(v, y) + frob(y, y)
    return (cost / weights.sum(dim=1).clamp(min=1.0) ** 2).mean()


class DeepClusteringObjective(nn.Module):
    """alpha x deep-clustering loss (+ (1 - alpha) x the mask-inference loss when the model has an MI head).

    Targets: the dominant source of every bin (ideal binary partition); weights: the bins within
    `vad_db` of the mixture's loudest bin (Asteroid's `ebased_vad`). The MI loss (Chimera++) is the
    permutation-invariant squared error between masked mixture magnitudes and source magnitudes,
    divided by the sources' total energy (a magnitude spectrum approximation, scale free like the DC term).
    """

    uses_model = True  # called as loss(model, mixture, sources), see SeparationSystem

    def __init__(self, alpha, vad_db):
        super().__init__()
        self.alpha, self.vad_db = float(alpha), float(vad_db)
        self.mi_pit = PITLossWrapper(self.pairwise_mi, pit_from="pw_mtx")

    @staticmethod
    def pairwise_mi(estimates, references):
        energy = references.pow(2).sum(dim=(1, 2, 3)).clamp(min=1e-8)  # sources' total energy per utterance
        diff = (estimates.unsqueeze(2) - references.unsqueeze(1)).pow(2).sum(dim=(-2, -1))  # [B, est, ref]
        return diff / energy[:, None, None]

    def forward(self, model, mixture, sources):
        out = model.training_outputs(mixture, sources)
        batch, n_freq, frames, dim = out["embedding"].shape
        target = out["source_mag"].argmax(dim=1).reshape(batch, -1)
        active = ebased_vad(out["mixture_mag"], self.vad_db).reshape(batch, -1).to(out["embedding"].dtype)
        n_src = out["source_mag"].shape[1]
        loss = deep_clustering_loss(out["embedding"].reshape(batch, -1, dim), target, active, n_src)
        if out["mi_masks"] is None:
            return loss
        estimates = out["mi_masks"] * out["mixture_mag"].unsqueeze(1)
        return self.alpha * loss + (1 - self.alpha) * self.mi_pit(estimates, out["source_mag"])


LOSSES = ("euclidean", "correlation", "discriminative", "sisdr", "deep_clustering")


def pairwise_loss(loss_cfg, filterbank, sample_rate):
    name, domain = loss_cfg["name"], loss_cfg["domain"]
    if name == "euclidean":
        return PairwiseEuclideanSpectrogram(sample_rate=sample_rate, domain=domain, **filterbank)
    if name == "correlation":
        return PairwiseCorrelationSpectrogram(sample_rate=sample_rate, domain=domain, **filterbank)
    if name == "discriminative":
        return PairwiseDiscriminative(PairwiseEuclideanSpectrogram(sample_rate=sample_rate, domain=domain, **filterbank),
                                      loss_cfg["gamma"])
    if name == "sisdr":
        return pairwise_neg_sisdr
    raise RecipeError(f"unknown loss.name '{name}'; known losses: {', '.join(LOSSES)}")


def make_loss(cfg):
    """The training objective of an experiment config: a module (est, ref) -> scalar, or for
    deep clustering (model, mixture, sources) -> scalar."""
    loss_cfg = cfg["loss"]
    if loss_cfg["name"] == "deep_clustering":
        return DeepClusteringObjective(loss_cfg["alpha"], loss_cfg["vad_db"])
    pairwise = pairwise_loss(loss_cfg, cfg["filterbank"], int(cfg["data"]["sample_rate"]))
    if loss_cfg["pit"]:
        return PITLossWrapper(pairwise, pit_from="pw_mtx")
    return FixedOrderLoss(pairwise)

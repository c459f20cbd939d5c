"""Training objectives on waveform estimates [B, n_src, T] against references [B, n_src, T].

Every loss is written in its *pairwise* form (a [B, n_src, n_src] matrix of the loss of estimate i
against reference j), so that the same function serves both assignments:
  - permutation invariant (`loss.pit: true`): Asteroid's `PITLossWrapper(pit_from="pw_mtx")` takes the
    best assignment (the "MinLoss" of the category study; Yu et al. 2017, "Permutation invariant
    training of deep models for speaker-independent multi-talker speech separation");
  - fixed order (`loss.pit: false`): estimate i is scored against reference i, the order of the view
    CSV's sources (the diagonal of the matrix).

Losses (spectrogram losses use Asteroid's STFT at the experiment's filterbank settings):
  euclidean       mean squared distance between estimated and reference magnitude spectrograms.
  correlation     1 - Pearson correlation between estimated and reference magnitude spectrograms, per
                  source (the category study's correlation objective): insensitive to the scale and
                  offset of an estimate, it rewards getting the spectro-temporal shape right.
  discriminative  Huang et al. 2014/2015: the euclidean distance to the own reference minus gamma times
                  the mean distance to the other references, which pushes an estimate away from the
                  other sources (gamma = loss.gamma; 0 gives euclidean).
  sisdr           negative scale-invariant SDR (Le Roux et al. 2019, "SDR - half-baked or well done?"),
                  Asteroid's `pairwise_neg_sisdr`.
"MinLoss" is any of them with `loss.pit: true`: the minimum over the n_src! assignments, found by
Asteroid's PITLossWrapper (exhaustively up to 3 sources, by the Hungarian algorithm from 4 on).
"""
import torch
from asteroid.losses import PITLossWrapper, pairwise_neg_sisdr
from asteroid_filterbanks import Encoder, STFTFB
from asteroid_filterbanks.transforms import mag
from torch import nn

from local.errors import RecipeError


class PairwiseEuclideanSpectrogram(nn.Module):
    """Pairwise mean squared error between magnitude STFTs: out[b, i, j] = mean_{f,t} (|E_i| - |R_j|)^2."""

    def __init__(self, n_filters, kernel_size, stride, sample_rate):
        super().__init__()
        self.stft = Encoder(STFTFB(n_filters=n_filters, kernel_size=kernel_size, stride=stride, sample_rate=sample_rate))

    def magnitude(self, wav):
        batch, n_src, time = wav.shape
        spec = mag(self.stft(wav.reshape(batch * n_src, 1, time)))
        return spec.reshape(batch, n_src, *spec.shape[1:])

    def forward(self, est, ref):
        e, r = self.magnitude(est), self.magnitude(ref)
        return ((e.unsqueeze(2) - r.unsqueeze(1)) ** 2).mean(dim=(-2, -1))


class PairwiseCorrelationSpectrogram(PairwiseEuclideanSpectrogram):
    """out[b, i, j] = 1 - Pearson r between |E_i| and |R_j| over all bins and frames."""

    def forward(self, est, ref):
        def standardise(x):
            x = x.flatten(start_dim=2)
            x = x - x.mean(dim=-1, keepdim=True)
            return x / (x.norm(dim=-1, keepdim=True) + 1e-8)

        e, r = standardise(self.magnitude(est)), standardise(self.magnitude(ref))
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


LOSSES = ("euclidean", "correlation", "discriminative", "sisdr")


def pairwise_loss(loss_cfg, filterbank, sample_rate):
    name = loss_cfg["name"]
    if name == "euclidean":
        return PairwiseEuclideanSpectrogram(sample_rate=sample_rate, **filterbank)
    if name == "correlation":
        return PairwiseCorrelationSpectrogram(sample_rate=sample_rate, **filterbank)
    if name == "discriminative":
        return PairwiseDiscriminative(PairwiseEuclideanSpectrogram(sample_rate=sample_rate, **filterbank),
                                      loss_cfg["gamma"])
    if name == "sisdr":
        return pairwise_neg_sisdr
    raise RecipeError(f"unknown loss.name '{name}'; known losses: {', '.join(LOSSES)}")


def make_loss(cfg):
    """The training objective of an experiment config: a module (est, ref) -> scalar."""
    loss_cfg = cfg["loss"]
    pairwise = pairwise_loss(loss_cfg, cfg["filterbank"], int(cfg["data"]["sample_rate"]))
    if loss_cfg["pit"]:
        return PITLossWrapper(pairwise, pit_from="pw_mtx")
    return FixedOrderLoss(pairwise)

"""Training objectives on waveform estimates [B, n_src, T] against references [B, n_src, T].

Every loss is written in its *pairwise* form (a [B, n_src, n_src] matrix of the loss of estimate i
against reference j), so that the same function serves both assignments:
  - permutation invariant (`loss.pit: true`): Asteroid's `PITLossWrapper(pit_from="pw_mtx")` takes the
    best assignment (the "MinLoss" of the category study; Yu et al. 2017, "Permutation invariant
    training of deep models for speaker-independent multi-talker speech separation");
  - fixed order (`loss.pit: false`): estimate i is scored against reference i, the order of the view
    CSV's sources (the diagonal of the matrix).

Losses:
  euclidean  mean squared distance between estimated and reference magnitude spectrograms, computed
             with Asteroid's STFT at the experiment's filterbank settings.
  sisdr      negative scale-invariant SDR (Le Roux et al. 2019, "SDR - half-baked or well done?"),
             Asteroid's `pairwise_neg_sisdr`.
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


class FixedOrderLoss(nn.Module):
    """Mean of the diagonal of a pairwise loss: estimate i is always scored against reference i."""

    def __init__(self, pairwise_loss):
        super().__init__()
        self.pairwise_loss = pairwise_loss

    def forward(self, est, ref):
        return torch.diagonal(self.pairwise_loss(est, ref), dim1=1, dim2=2).mean()


def pairwise_loss(name, filterbank, sample_rate):
    if name == "euclidean":
        return PairwiseEuclideanSpectrogram(sample_rate=sample_rate, **filterbank)
    if name == "sisdr":
        return pairwise_neg_sisdr
    raise RecipeError(f"unknown loss.name '{name}'; known losses: {', '.join(LOSSES)}")


LOSSES = ("euclidean", "sisdr")


def make_loss(cfg):
    """The training objective of an experiment config: a module (est, ref) -> scalar."""
    loss_cfg = cfg["loss"]
    pairwise = pairwise_loss(loss_cfg["name"], cfg["filterbank"], int(cfg["data"]["sample_rate"]))
    if loss_cfg["pit"]:
        return PITLossWrapper(pairwise, pit_from="pw_mtx")
    return FixedOrderLoss(pairwise)

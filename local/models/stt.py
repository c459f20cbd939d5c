"""STT: the Spectro-Temporal Transformer masker of the category-separation study (Zadeh, Ma, Poria and Morency,
"WildMix Dataset and Spectro-Temporal Transformer Model for Monoaural Audio Source Separation", AAAI 2020).

The paper's point is its encoder (the Spectro-Temporal Encoder): separation needs long-range dependencies
along time and along frequency, so self-attention runs over both. Here:
  1. a convolutional front end on the normalised log-magnitude spectrogram (two 3x3 convolutions, the second
     with stride `band_stride` along frequency) turns the [F, T] image into [F', T] tokens of `channels`
     features, one per frequency band and frame, projected to d_model;
  2. `n_blocks` blocks, each a temporal layer (every band attends over the frames, with sinusoidal frame
     positions added once at the input) followed by a spectral layer (every frame attends over the bands,
     with learned band positions); pre-norm `nn.TransformerEncoderLayer`s;
  3. a mask head: per frame, the band tokens are flattened and projected to one mask per source and bin.

Departures from the paper, stated: layer sizes are chosen to train on a CPU; the encoder is encoder-only,
as our VTF (all frames' masks in one pass, no autoregressive decoder); the hierarchical disentangling is
rendered as the alternation of temporal and spectral layers and the band reduction of the front end, not
as the paper's exact per-source branches. The masks multiply the mixture STFT like every STFT masker here
(local/models/stft_masker.py), so the oracle PSM bounds it.
"""
import torch
from asteroid.masknn import activations
from torch import nn

from local.models.stft_masker import STFTMasker, log_magnitude_features
from local.models.vtf import sinusoidal_positions


def _layer(d_model, n_heads, d_ff, dropout):
    return nn.TransformerEncoderLayer(d_model, n_heads, d_ff, dropout, batch_first=True, norm_first=True)


class SpectroTemporalMaskNet(nn.Module):
    def __init__(self, n_freq, n_src, d_model, n_heads, d_ff, n_blocks, dropout, channels, band_stride, mask_act):
        super().__init__()
        self.n_freq, self.n_src, self.d_model = n_freq, n_src, d_model
        self.front = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1), nn.GELU(),
            nn.Conv2d(channels, channels, 3, stride=(band_stride, 1), padding=1), nn.GELU(),
        )
        self.n_bands = (n_freq - 1) // band_stride + 1  # the strided convolution's output height
        self.input_proj = nn.Linear(channels, d_model)
        self.band_positions = nn.Parameter(torch.zeros(self.n_bands, d_model))
        self.temporal = nn.ModuleList(_layer(d_model, n_heads, d_ff, dropout) for _ in range(n_blocks))
        self.spectral = nn.ModuleList(_layer(d_model, n_heads, d_ff, dropout) for _ in range(n_blocks))
        self.norm = nn.LayerNorm(d_model)
        self.output = nn.Linear(self.n_bands * d_model, n_src * n_freq)
        self.mask_act = activations.get(mask_act)()

    def forward(self, tf_rep):
        features = log_magnitude_features(tf_rep)  # [B, F, T]
        x = self.front(features.unsqueeze(1))  # [B, C, F', T]
        batch, _, bands, frames = x.shape
        x = self.input_proj(x.permute(0, 2, 3, 1))  # [B, F', T, d]
        x = x + sinusoidal_positions(frames, self.d_model, x.device) + self.band_positions[:, None, :]
        for temporal, spectral in zip(self.temporal, self.spectral):
            x = temporal(x.reshape(batch * bands, frames, -1)).view(batch, bands, frames, -1)  # along time
            x = x.transpose(1, 2).reshape(batch * frames, bands, -1)
            x = spectral(x).view(batch, frames, bands, -1).transpose(1, 2)  # along frequency
        x = self.norm(x).permute(0, 2, 1, 3).reshape(batch, frames, bands * self.d_model)
        masks = self.output(x).view(batch, frames, self.n_src, self.n_freq)
        return self.mask_act(masks.permute(0, 2, 3, 1))  # [B, n_src, F, T]


class STTMasker(STFTMasker):
    """Spectro-Temporal Transformer mask estimator on an STFT (see module docstring)."""

    def __init__(self, n_src, d_model=64, n_heads=4, d_ff=256, n_blocks=2, dropout=0.1, channels=16, band_stride=4,
                 mask_act="sigmoid", n_filters=256, kernel_size=256, stride=64, sample_rate=8000):
        if d_model % n_heads:
            raise ValueError(f"model.d_model ({d_model}) must be divisible by model.n_heads ({n_heads})")
        if band_stride < 1:
            raise ValueError(f"model.band_stride must be at least 1, got {band_stride}")
        masker = SpectroTemporalMaskNet(n_filters // 2 + 1, n_src, d_model, n_heads, d_ff, n_blocks, dropout,
                                        channels, band_stride, mask_act)
        super().__init__(masker, n_src, n_filters, kernel_size, stride, sample_rate)
        self._masker_args = dict(d_model=d_model, n_heads=n_heads, d_ff=d_ff, n_blocks=n_blocks, dropout=dropout,
                                 channels=channels, band_stride=band_stride, mask_act=mask_act)

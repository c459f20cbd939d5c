"""VTF: the vanilla Transformer masker of the category-separation study (Zadeh et al., "WildMix
Dataset and Spectro-Temporal Transformer Model for Monoaural Audio Source Separation").

Frames of the normalised log-magnitude spectrogram are projected to d_model, given sinusoidal
positions (Vaswani et al. 2017), passed through a stack of multi-head self-attention encoder layers
(pre-norm, PyTorch's `nn.TransformerEncoder`), and projected to one mask per source and bin.

The study's VTF was an encoder-decoder trained with teacher forcing and decoded greedily frame by
frame. Here it is encoder-only: the masks of all frames come out of one parallel pass, so inference
costs one forward instead of one per frame, and training sees exactly what inference does (no
exposure bias). That is the sensible default for a masker whose output is aligned frame by frame
with its input.
"""
import math

import torch
from asteroid.masknn import activations
from torch import nn

from local.models.stft_masker import STFTMasker, log_magnitude_features


def sinusoidal_positions(n_frames, d_model, device=None):
    """[n_frames, d_model] sin/cos position table of Vaswani et al. 2017."""
    position = torch.arange(n_frames, device=device, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, d_model, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / d_model))
    table = torch.zeros(n_frames, d_model, device=device)
    table[:, 0::2] = torch.sin(position * div)
    table[:, 1::2] = torch.cos(position * div[: d_model // 2])
    return table


class TransformerMaskNet(nn.Module):
    def __init__(self, n_freq, n_src, d_model, n_heads, d_ff, n_layers, dropout, mask_act):
        super().__init__()
        self.n_freq, self.n_src, self.d_model = n_freq, n_src, d_model
        self.input_proj = nn.Linear(n_freq, d_model)
        layer = nn.TransformerEncoderLayer(d_model, n_heads, d_ff, dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, n_layers, norm=nn.LayerNorm(d_model), enable_nested_tensor=False)
        self.output = nn.Linear(d_model, n_src * n_freq)
        self.mask_act = activations.get(mask_act)()

    def forward(self, tf_rep):
        x = self.input_proj(log_magnitude_features(tf_rep).transpose(1, 2))  # [B, frames, d_model]
        x = x * math.sqrt(self.d_model) + sinusoidal_positions(x.shape[1], self.d_model, x.device)
        masks = self.output(self.encoder(x))
        batch, frames, _ = masks.shape
        return self.mask_act(masks.view(batch, frames, self.n_src, self.n_freq).permute(0, 2, 3, 1))


class VTFMasker(STFTMasker):
    """Encoder-only Transformer mask estimator on an STFT (see module docstring)."""

    def __init__(self, n_src, d_model=128, n_heads=4, d_ff=512, n_layers=3, dropout=0.1, mask_act="sigmoid",
                 n_filters=256, kernel_size=256, stride=64, sample_rate=8000):
        if d_model % n_heads:
            raise ValueError(f"model.d_model ({d_model}) must be divisible by model.n_heads ({n_heads})")
        masker = TransformerMaskNet(n_filters // 2 + 1, n_src, d_model, n_heads, d_ff, n_layers, dropout, mask_act)
        super().__init__(masker, n_src, n_filters, kernel_size, stride, sample_rate)
        self._masker_args = dict(d_model=d_model, n_heads=n_heads, d_ff=d_ff, n_layers=n_layers, dropout=dropout,
                                 mask_act=mask_act)

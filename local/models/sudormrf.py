"""Asteroid's SuDoRM-RF (Tzinis, Wang and Smaragdis 2020) with its mask layer computed as a matrix product.

The mask layer of Asteroid's SuDORMRF is a Conv2d with one input channel and a kernel of (in_chan + 1, 1): a
convolution along the basis axis, the same at every frame. On CPU, torch's backward of that tall kernel takes a
slow path: measured on this project's 2-core machine (torch 2.11), 10.6 of the 12.5 s of one training step of
`conf/sudormrf_2src.yml` (batch 4, 2 s at 8 kHz) went there, so the model meant for small compute trained at 0.4
mixtures per second. The same linear map written as a banded (Toeplitz) matrix per source and one `einsum` gives
the same outputs and gradients (tests/test_models.py checks both against Asteroid's layer) in a fraction of it.

The parameters keep Asteroid's names and shapes (`masker.m.weight` [n_src, 1, K, 1], `masker.m.bias`) and the
class keeps Asteroid's name, so a package saved here loads into `asteroid.models.SuDORMRFNet` and back.
"""
import inspect

import torch
from asteroid.models import SuDORMRFNet as AsteroidSuDORMRFNet
from torch import nn


class BasisAxisConv(nn.Module):
    """`nn.Conv2d(1, n_src, (K, 1), padding=(P, 0))` on [B, 1, C, T], as y[b, s] = M_s x[b] + bias[s], where
    M_s[c, d] = weight[s, d - c + P] on the band 0 <= d - c + P < K and 0 elsewhere."""

    def __init__(self, conv):
        super().__init__()
        if conv.in_channels != 1 or conv.kernel_size[1] != 1 or conv.stride != (1, 1) or conv.dilation != (1, 1) \
                or conv.groups != 1 or conv.padding[1] != 0 or not isinstance(conv.padding[0], int):
            raise ValueError(f"BasisAxisConv replaces a (K, 1) Conv2d with one input channel, not {conv}")
        self.weight = conv.weight
        self.bias = conv.bias
        self.kernel = conv.kernel_size[0]
        self.pad = conv.padding[0]

    def band(self, n_in):
        """[n_src, n_out, n_in] matrices of the convolution along an axis of n_in bins."""
        n_out = n_in + 2 * self.pad - self.kernel + 1
        tap = torch.arange(n_in, device=self.weight.device)[None, :] \
            - torch.arange(n_out, device=self.weight.device)[:, None] + self.pad
        inside = (tap >= 0) & (tap < self.kernel)
        taps = self.weight[:, 0, :, 0]  # [n_src, K]
        return taps[:, tap.clamp(0, self.kernel - 1)] * inside

    def forward(self, x):
        out = torch.einsum("scd,bdt->bsct", self.band(x.shape[-2]), x[:, 0])
        return out if self.bias is None else out + self.bias[None, :, None, None]


class SuDORMRFNet(AsteroidSuDORMRFNet):
    """Asteroid's SuDORMRFNet, same arguments, parameters and outputs; only the mask layer's arithmetic differs."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.masker.m = BasisAxisConv(self.masker.m)

    __init__.__signature__ = inspect.signature(AsteroidSuDORMRFNet.__init__)  # config keys are checked against it

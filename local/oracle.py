"""Oracle masks: what STFT masking can reach on a mixture when the references are known.

The ideal ratio mask |S_i| / sum_j |S_j| (magnitudes, Srinivasan et al. 2006; Wang et al. 2014, "On
training targets for supervised speech separation") applied to the mixture STFT, with the same
filterbank and edge padding as the models, gives an upper bound for the magnitude maskers.
"""
import torch
from asteroid_filterbanks import make_enc_dec
from asteroid_filterbanks.transforms import apply_mag_mask, mag

from local.models.stft_masker import edge_padding


class OracleMasks:
    def __init__(self, n_filters, kernel_size, stride, sample_rate):
        self.encoder, self.decoder = make_enc_dec("stft", n_filters=n_filters, kernel_size=kernel_size,
                                                  stride=stride, sample_rate=sample_rate)
        self.kernel_size, self.stride = kernel_size, stride

    @torch.no_grad()
    def ideal_ratio_mask(self, mixture, sources):
        """mixture [T], sources [n_src, T] -> IRM estimates [n_src, T]."""
        length = mixture.shape[-1]
        left, right = edge_padding(length, self.kernel_size, self.stride)
        pad = lambda x: torch.nn.functional.pad(x, (left, right))
        mix_tf = self.encoder(pad(mixture)[None, None])  # [1, 2F, frames]
        src_mag = mag(self.encoder(pad(sources)[:, None]))  # [n_src, F, frames]
        irm = src_mag / (src_mag.sum(dim=0, keepdim=True) + 1e-8)
        est = self.decoder(apply_mag_mask(mix_tf, irm)).reshape(len(sources), -1)  # [n_src, T']
        return est[..., left : left + length]

"""Oracle masks: what STFT masking can reach on a mixture when the references are known.

Both are applied to the mixture STFT with the same filterbank and edge padding as the models, so they
are upper bounds for the STFT maskers on the very same test views:

- ideal ratio mask (IRM) |S_i| / sum_j |S_j| (Srinivasan et al. 2006; Wang et al. 2014, "On training
  targets for supervised speech separation"): the bound for magnitude maskers;
- ideal binary mask (IBM) 1 where source i is the loudest in the bin (Wang 2005, "On ideal binary mask
  as the computational goal of auditory scene analysis"): what a hard assignment of bins can reach,
  i.e. the bound of deep clustering with k-means.
"""
import torch
from asteroid_filterbanks import make_enc_dec
from asteroid_filterbanks.transforms import apply_mag_mask, mag

from local.models.stft_masker import edge_padding

ORACLES = ("irm", "ibm")


class OracleMasks:
    def __init__(self, n_filters, kernel_size, stride, sample_rate):
        self.encoder, self.decoder = make_enc_dec("stft", n_filters=n_filters, kernel_size=kernel_size,
                                                  stride=stride, sample_rate=sample_rate)
        self.kernel_size, self.stride = kernel_size, stride

    @torch.no_grad()
    def estimates(self, mixture, sources, kind):
        """mixture [T], sources [n_src, T] -> the `kind` ("irm" or "ibm") mask's estimates [n_src, T]."""
        length = mixture.shape[-1]
        left, right = edge_padding(length, self.kernel_size, self.stride)
        pad = lambda x: torch.nn.functional.pad(x, (left, right))
        mix_tf = self.encoder(pad(mixture)[None, None])  # [1, 2F, frames]
        src_mag = mag(self.encoder(pad(sources)[:, None]))  # [n_src, F, frames]
        if kind == "irm":
            mask = src_mag / (src_mag.sum(dim=0, keepdim=True) + 1e-8)
        elif kind == "ibm":
            mask = torch.nn.functional.one_hot(src_mag.argmax(dim=0), len(sources)).permute(2, 0, 1).to(src_mag.dtype)
        else:
            raise ValueError(f"unknown oracle mask {kind!r}; known: {', '.join(ORACLES)}")
        est = self.decoder(apply_mag_mask(mix_tf, mask)).reshape(len(sources), -1)  # [n_src, T']
        return est[..., left : left + length]

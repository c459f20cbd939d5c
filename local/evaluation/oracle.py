"""Oracle masks: what STFT masking reaches on a mixture when the references are known.

All are applied to the mixture STFT X with the same filterbank and edge padding as the models, on the very
same test views. Which one bounds a model depends on the masks the model can produce (`bound_for`):

- `psm`, the truncated phase-sensitive mask clip(|S_i| / |X| cos(angle S_i - angle X), 0, 1) (Erdogan et al.
  2015, "Phase-sensitive and recognition-boosted speech separation using deep recurrent neural networks"):
  per bin, the real mask in [0, 1] closest to S_i in squared error, so it bounds every real-valued [0, 1]
  masker (sigmoid or softmax masks: LSTM, VTF, DRNN, SRNN, Chimera's mask head) in that sense;
- `ibm`, the ideal binary mask, 1 where source i is the loudest in the bin (Wang 2005, "On ideal binary mask
  as the computational goal of auditory scene analysis"): the bound of a hard assignment of bins, i.e. of
  deep clustering with k-means;
- `ratio`, the magnitude ratio |S_i| / sum_j |S_j| with the mixture phase (the "IRM" of Wang et al. 2014,
  "On training targets for supervised speech separation"). A common reference point, not an upper bound:
  a [0, 1] masker can beat it, and the binary mask often does.

Complex maskers (GAB) and learned-basis models (DPRNN-TasNet) have no bound among these.
"""
import torch
from asteroid_filterbanks import make_enc_dec
from asteroid_filterbanks.transforms import apply_mag_mask, mag

from local.models.stft_masker import edge_padding

ORACLES = ("ratio", "ibm", "psm")


def bound_for(model):
    """The oracle that bounds a model's masks ("psm", "ibm") or None (complex masks, learned bases)."""
    return getattr(model, "oracle_bound", None)


class OracleMasks:
    def __init__(self, n_filters, kernel_size, stride, sample_rate):
        self.encoder, self.decoder = make_enc_dec("stft", n_filters=n_filters, kernel_size=kernel_size,
                                                  stride=stride, sample_rate=sample_rate)
        self.kernel_size, self.stride = kernel_size, stride
        self.n_freq = n_filters // 2 + 1

    def masks(self, mix_tf, src_tf, kind):
        """Masks [n_src, F, frames] from the mixture STFT [1, 2F, frames] and the sources' [n_src, 2F, frames]."""
        src_mag = mag(src_tf)
        if kind == "ratio":
            return src_mag / (src_mag.sum(dim=0, keepdim=True) + 1e-8)
        if kind == "ibm":
            return torch.nn.functional.one_hot(src_mag.argmax(dim=0), len(src_tf)).permute(2, 0, 1).to(src_mag.dtype)
        if kind == "psm":
            f = self.n_freq
            # |S| cos(angle S - angle X) / |X| = Re(S conj(X)) / |X|^2
            real = src_tf[:, :f] * mix_tf[:, :f] + src_tf[:, f:] * mix_tf[:, f:]
            return (real / (mag(mix_tf) ** 2 + 1e-8)).clamp(0.0, 1.0)
        raise ValueError(f"unknown oracle mask {kind!r}; known: {', '.join(ORACLES)}")

    @torch.no_grad()
    def estimates(self, mixture, sources, kinds=ORACLES):
        """mixture [T], sources [n_src, T] -> {kind: that mask's estimates [n_src, T]} (one STFT for all kinds)."""
        length = mixture.shape[-1]
        left, right = edge_padding(length, self.kernel_size, self.stride)
        pad = lambda x: torch.nn.functional.pad(x, (left, right))
        mix_tf = self.encoder(pad(mixture)[None, None])  # [1, 2F, frames]
        src_tf = self.encoder(pad(sources)[:, None])  # [n_src, 2F, frames]
        out = {}
        for kind in kinds:
            est = self.decoder(apply_mag_mask(mix_tf, self.masks(mix_tf, src_tf, kind))).reshape(len(sources), -1)
            out[kind] = est[..., left : left + length]
        return out

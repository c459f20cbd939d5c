"""The STFT front and back end shared by every category-separation masker.

`STFTMasker` is an Asteroid `BaseEncoderMaskerDecoder` whose encoder and decoder are Asteroid's STFT
filterbank (`make_enc_dec("stft", ...)`): waveform [B, T] -> complex STFT -> the family's mask
network -> one mask per source applied to the mixture STFT -> inverse STFT -> waveforms
[B, n_src, T]. Evaluation, losses on waveforms and separation therefore never depend on the family.

A family only writes its mask network: a module mapping the mixture STFT in Asteroid's layout
[B, 2F, frames] (real parts then imaginary parts) to magnitude masks [B, n_src, F, frames]
(`mask_type="magnitude"`) or complex masks [B, n_src, 2F, frames] (`mask_type="complex"`, GAB).
"""
import torch
from asteroid.models.base_models import BaseEncoderMaskerDecoder
from asteroid_filterbanks import make_enc_dec
from asteroid_filterbanks.transforms import apply_complex_mask, apply_mag_mask, mag


def log_magnitude_features(tf_rep, eps=1e-8):
    """Log-magnitude spectrogram [B, F, frames], normalised per utterance (zero mean, unit variance).

    Per-utterance statistics make the features independent of the input level, as masks must be,
    and need no training-set statistics to be carried with the model.
    """
    logmag = torch.log(mag(tf_rep) + eps)
    mean = logmag.mean(dim=(1, 2), keepdim=True)
    std = logmag.std(dim=(1, 2), keepdim=True)
    return (logmag - mean) / (std + 1e-5)


def edge_padding(length, kernel_size, stride):
    """(left, right) zero padding so every input sample is covered by the same number of STFT frames:
    one window minus one hop on each side, plus up to a hop to complete the last frame. With it the
    STFT/iSTFT pair reconstructs the signal exactly, edges included."""
    pad = kernel_size - stride
    tail = (-(length + 2 * pad - kernel_size)) % stride
    return pad, pad + tail


class STFTMasker(BaseEncoderMaskerDecoder):
    """Encoder (STFT) -> `masker` -> magnitude masks on the mixture STFT -> decoder (iSTFT)."""

    mask_type = "magnitude"

    def __init__(self, masker, n_src, n_filters=256, kernel_size=256, stride=64, sample_rate=8000):
        encoder, decoder = make_enc_dec(
            "stft", n_filters=n_filters, kernel_size=kernel_size, stride=stride, sample_rate=sample_rate
        )
        super().__init__(encoder, masker, decoder)
        self.n_src = n_src
        self.n_freq = n_filters // 2 + 1
        self.stft_args = dict(n_filters=n_filters, kernel_size=kernel_size, stride=stride, sample_rate=sample_rate)

    def forward(self, wav):
        """[B, T] (or [T]) -> [B, n_src, T], padded at the edges (see `edge_padding`) and cut back."""
        length = wav.shape[-1]
        left, right = edge_padding(length, self.stft_args["kernel_size"], self.stft_args["stride"])
        estimates = super().forward(torch.nn.functional.pad(wav, (left, right)))
        return estimates[..., left : left + length]

    def stft(self, wav):
        """[B, T] -> the STFT [B, 2F, frames] that forward() masks (same edge padding)."""
        left, right = edge_padding(wav.shape[-1], self.stft_args["kernel_size"], self.stft_args["stride"])
        return self.encoder(torch.nn.functional.pad(wav, (left, right)).unsqueeze(1))

    def apply_masks(self, tf_rep, est_masks):
        if self.mask_type == "complex":
            return apply_complex_mask(tf_rep.unsqueeze(1), est_masks)
        return apply_mag_mask(tf_rep.unsqueeze(1), est_masks)

    @property
    def oracle_bound(self):
        """The oracle mask that bounds this model's masks (local/evaluation/oracle.py): "psm" for real masks
        in [0, 1] (sigmoid, softmax or the soft-mask layer), None for complex or unbounded masks."""
        if self.mask_type == "complex":
            return None
        return "psm" if self._masker_args.get("mask_act", "sigmoid") in ("sigmoid", "softmax") else None

    def masker_args(self):
        """The family's own constructor arguments (everything but n_src and the STFT)."""
        return dict(self._masker_args)

    def get_model_args(self):
        return {"n_src": self.n_src, **self.stft_args, **self.masker_args()}

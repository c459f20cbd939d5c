"""GAB: the audio-only stream of "Looking to Listen at the Cocktail Party" (Ephrat et al. 2018), the
audio-only baseline of the category-separation study.

The complex mixture STFT, power-law compressed (|X|^0.3 with the phase kept, as in the paper), enters
as two channels (real, imaginary) [B, 2, F, frames]. A stack of 2-D convolutions, each followed by
batch norm and ReLU, grows the receptive field with dilations first along time, then along time and
frequency; a 1x1 convolution squeezes to a few channels per bin. The result is flattened per frame,
passed through a BLSTM and fully connected layers, and turned into one complex mask per source
(real and imaginary parts bounded by `mask_act`), applied to the uncompressed mixture STFT.

Paper sizes: 96 channels, 15 conv layers (1x7, 7x1, then 5x5 with time dilations 1..32 and
time-frequency dilations 1..32), 8 squeeze channels, BLSTM 400, three FC layers of 600. The defaults
here are smaller so the model trains on a CPU; the paper's sizes are a config away
(see conf/base/gab.yml).
"""
import torch
from asteroid.masknn import activations
from asteroid.masknn.recurrent import SingleRNN
from asteroid_filterbanks.transforms import mag
from torch import nn

from local.models.stft_masker import STFTMasker


def conv_block(c_in, c_out, kernel, dilation):
    padding = tuple(d * (k - 1) // 2 for k, d in zip(kernel, dilation))
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, dilation=dilation, padding=padding),
                         nn.BatchNorm2d(c_out), nn.ReLU())


class GABMaskNet(nn.Module):
    def __init__(self, n_freq, n_src, channels, dilations, squeeze_channels, lstm_hidden, fc_dim, n_fc,
                 compress, mask_act):
        super().__init__()
        self.n_freq, self.n_src, self.compress = n_freq, n_src, compress
        # Layout [B, C, F, frames]: kernel (freq, time). The paper's first two layers are 1x7 and 7x1.
        layers = [conv_block(2, channels, (7, 1), (1, 1)), conv_block(channels, channels, (1, 7), (1, 1))]
        for time_d, freq_d in dilations:
            layers.append(conv_block(channels, channels, (5, 5), (freq_d, time_d)))
        layers.append(conv_block(channels, squeeze_channels, (1, 1), (1, 1)))
        self.convs = nn.Sequential(*layers)
        self.blstm = SingleRNN("lstm", squeeze_channels * n_freq, lstm_hidden, bidirectional=True)
        fcs, dim = [], 2 * lstm_hidden
        for _ in range(n_fc):
            fcs += [nn.Linear(dim, fc_dim), nn.ReLU()]
            dim = fc_dim
        self.fcs = nn.Sequential(*fcs)
        self.output = nn.Linear(dim, n_src * 2 * n_freq)
        self.mask_act = activations.get(mask_act)()

    def forward(self, tf_rep):
        batch, _, frames = tf_rep.shape
        re, im = tf_rep[:, : self.n_freq], tf_rep[:, self.n_freq :]
        scale = (mag(tf_rep) + 1e-8) ** (self.compress - 1.0)  # |X|^p with the phase kept
        x = torch.stack([re * scale, im * scale], dim=1)  # [B, 2, F, frames]
        x = self.convs(x)  # [B, C', F, frames]
        x = x.permute(0, 3, 1, 2).reshape(batch, frames, -1)
        x = self.fcs(self.blstm(x))
        masks = self.mask_act(self.output(x))  # [B, frames, n_src * 2F]
        return masks.view(batch, frames, self.n_src, 2 * self.n_freq).permute(0, 2, 3, 1)


class GABMasker(STFTMasker):
    """Looking-to-Listen audio-only complex masker on an STFT (see module docstring)."""

    mask_type = "complex"

    def __init__(self, n_src, channels=16, dilations=((1, 1), (2, 1), (4, 1), (8, 1), (1, 1), (2, 2), (4, 4)),
                 squeeze_channels=4, lstm_hidden=128, fc_dim=256, n_fc=2, compress=0.3, mask_act="tanh",
                 n_filters=256, kernel_size=256, stride=64, sample_rate=8000):
        dilations = [tuple(int(v) for v in d) for d in dilations]
        masker = GABMaskNet(n_filters // 2 + 1, n_src, channels, dilations, squeeze_channels, lstm_hidden, fc_dim,
                            n_fc, compress, mask_act)
        super().__init__(masker, n_src, n_filters, kernel_size, stride, sample_rate)
        self._masker_args = dict(channels=channels, dilations=[list(d) for d in dilations],
                                 squeeze_channels=squeeze_channels, lstm_hidden=lstm_hidden, fc_dim=fc_dim, n_fc=n_fc,
                                 compress=compress, mask_act=mask_act)

"""LSTM: the baseline masker of the category-separation study.

A residual stack of bidirectional LSTMs over the frames of the normalised log-magnitude spectrogram,
then a linear layer to one mask per source and frequency bin. Built from Asteroid's `SingleRNN`.
Each layer is x <- x + Linear(BLSTM(LayerNorm(x))) (pre-norm residual), which trains stably at depth.
"""
from asteroid.masknn import activations
from asteroid.masknn.recurrent import SingleRNN
from torch import nn

from local.models.stft_masker import STFTMasker, log_magnitude_features


class ResidualBLSTMMasker(nn.Module):
    """[B, 2F, frames] complex STFT -> [B, n_src, F, frames] magnitude masks."""

    def __init__(self, n_freq, n_src, hidden_size, n_layers, dropout, mask_act):
        super().__init__()
        self.n_freq, self.n_src = n_freq, n_src
        self.input_proj = nn.Linear(n_freq, hidden_size)
        self.norms = nn.ModuleList(nn.LayerNorm(hidden_size) for _ in range(n_layers))
        self.rnns = nn.ModuleList(
            SingleRNN("lstm", hidden_size, hidden_size, n_layers=1, bidirectional=True) for _ in range(n_layers)
        )
        self.projs = nn.ModuleList(nn.Linear(2 * hidden_size, hidden_size) for _ in range(n_layers))
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Linear(hidden_size, n_src * n_freq)
        self.mask_act = activations.get(mask_act)()

    def forward(self, tf_rep):
        x = self.input_proj(log_magnitude_features(tf_rep).transpose(1, 2))  # [B, frames, H]
        for norm, rnn, proj in zip(self.norms, self.rnns, self.projs):
            x = x + self.dropout(proj(rnn(norm(x))))
        masks = self.output(x)  # [B, frames, n_src * F]
        batch, frames, _ = masks.shape
        masks = masks.view(batch, frames, self.n_src, self.n_freq).permute(0, 2, 3, 1)
        return self.mask_act(masks)


class LSTMMasker(STFTMasker):
    """Residual BLSTM mask estimator on an STFT (see module docstring)."""

    def __init__(self, n_src, hidden_size=256, n_layers=3, dropout=0.0, mask_act="sigmoid",
                 n_filters=256, kernel_size=256, stride=64, sample_rate=8000):
        masker = ResidualBLSTMMasker(n_filters // 2 + 1, n_src, hidden_size, n_layers, dropout, mask_act)
        super().__init__(masker, n_src, n_filters, kernel_size, stride, sample_rate)
        self._masker_args = dict(hidden_size=hidden_size, n_layers=n_layers, dropout=dropout, mask_act=mask_act)

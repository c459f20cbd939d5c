"""DRNN and SRNN: the deep recurrent separation networks of Huang, Kim, Hasegawa-Johnson and
Smaragdis ("Deep learning for monaural speech separation", ICASSP 2014; "Joint optimization of masks
and deep recurrent neural networks for monaural source separation", IEEE/ACM TASLP 2015).

Both are deep networks over spectrogram frames:
  DRNN-k  L hidden layers, of which only layer k has a temporal (recurrent) connection; the others
          are fully connected ReLU layers.
  sRNN    every hidden layer is recurrent (the stacked RNN).
The output layer estimates a non-negative magnitude spectrum y_i for each source, and the soft
time-frequency mask layer turns them into masks m_i = |y_i| / sum_j |y_j| that are optimised jointly
with the network ("smoothing"): the masked estimates m_i * |X| always sum to the mixture.

Departures, stated: the input is the per-utterance normalised log-magnitude spectrum instead of raw
magnitudes with context windows, and the recurrences are Asteroid `SingleRNN`s (tanh RNN by default,
or LSTM/GRU) rather than ReLU RNNs, which diverge without the paper's careful initialisation. The
discriminative objective of the paper is `loss.name: discriminative` (local/training/losses.py).
"""
from asteroid.masknn.recurrent import SingleRNN
from torch import nn

from local.models.stft_masker import STFTMasker, log_magnitude_features


class HuangRNNNet(nn.Module):
    """Hidden layers (recurrent where `recurrent[i]`) -> per-source ReLU outputs -> soft masks."""

    def __init__(self, n_freq, n_src, hidden_size, recurrent, rnn_type, bidirectional):
        super().__init__()
        self.n_freq, self.n_src = n_freq, n_src
        layers, dim = nn.ModuleList(), n_freq
        for is_recurrent in recurrent:
            if is_recurrent:
                layers.append(SingleRNN(rnn_type, dim, hidden_size, bidirectional=bidirectional))
                dim = hidden_size * (2 if bidirectional else 1)
            else:
                layers.append(nn.Sequential(nn.Linear(dim, hidden_size), nn.ReLU()))
                dim = hidden_size
        self.layers = layers
        self.output = nn.Sequential(nn.Linear(dim, n_src * n_freq), nn.ReLU())

    def forward(self, tf_rep):
        x = log_magnitude_features(tf_rep).transpose(1, 2)  # [B, frames, F]
        for layer in self.layers:
            x = layer(x)
        batch, frames, _ = x.shape
        y = self.output(x).view(batch, frames, self.n_src, self.n_freq).permute(0, 2, 3, 1)
        return soft_mask(y)


def soft_mask(estimates, eps=1e-8):
    """Huang et al.'s soft time-frequency mask layer: m_i = |y_i| / sum_j |y_j| over sources (dim 1).
    Where every estimate is zero the sources share the bin equally, so masks always sum to one."""
    estimates = estimates.abs() + eps
    return estimates / estimates.sum(dim=1, keepdim=True)


class DRNNMasker(STFTMasker):
    """DRNN-k: `n_layers` hidden layers, recurrent only at layer `recurrent_layer` (1-based)."""

    def __init__(self, n_src, hidden_size=256, n_layers=3, recurrent_layer=2, rnn_type="RNN", bidirectional=False,
                 n_filters=256, kernel_size=256, stride=64, sample_rate=8000):
        if not 1 <= recurrent_layer <= n_layers:
            raise ValueError(f"model.recurrent_layer must be in 1..n_layers={n_layers}, got {recurrent_layer}")
        recurrent = [i + 1 == recurrent_layer for i in range(n_layers)]
        masker = HuangRNNNet(n_filters // 2 + 1, n_src, hidden_size, recurrent, rnn_type, bidirectional)
        super().__init__(masker, n_src, n_filters, kernel_size, stride, sample_rate)
        self._masker_args = dict(hidden_size=hidden_size, n_layers=n_layers, recurrent_layer=recurrent_layer,
                                 rnn_type=rnn_type, bidirectional=bidirectional)


class SRNNMasker(STFTMasker):
    """sRNN: `n_layers` hidden layers, every one recurrent."""

    def __init__(self, n_src, hidden_size=256, n_layers=3, rnn_type="RNN", bidirectional=False,
                 n_filters=256, kernel_size=256, stride=64, sample_rate=8000):
        masker = HuangRNNNet(n_filters // 2 + 1, n_src, hidden_size, [True] * n_layers, rnn_type, bidirectional)
        super().__init__(masker, n_src, n_filters, kernel_size, stride, sample_rate)
        self._masker_args = dict(hidden_size=hidden_size, n_layers=n_layers, rnn_type=rnn_type,
                                 bidirectional=bidirectional)

"""STT: the Spectro-Temporal Transformer of the category-separation study (Zadeh, Ma, Poria and Morency,
"WildMix Dataset and Spectro-Temporal Transformer Model for Monoaural Audio Source Separation", AAAI 2020),
built as its authors' code builds it (repository tianjunm/monaural-source-separation, models/stt_aaai.py:
`make_STT`, `DoubleEncoder`, `ConvEncoderLayer`, `Generator`; models/setup.py). Read for the design; the code
here is written anew.

Input: the complex STFT of the mixture, each frame its real parts then its imaginary parts (2F values),
projected to d_model and scaled by sqrt(d_model), with sinusoidal frame positions and dropout (the authors'
`Embeddings` + `PositionalEncoding`).

Encoder: `n_layers` spectro-temporal layers. Each runs two branches on the same input and sums them:
  - temporal: the T frames are the tokens (d_model features each);
  - spectral: the d_model latent channels are the tokens (T features each: the input transposed);
each branch a pre-norm stack of three residual sub-layers, x + dropout(f(LayerNorm(x))), in the authors'
order: a convolutional compress/expand sub-layer (`ConvSublayer`: tokens as channels, a Conv1d whose kernel
spans the token axis down to one value per `c_out` channel, BatchNorm, ReLU, a transposed Conv1d back to the
tokens at `d_out` values, BatchNorm, ReLU, and a Linear from d_out back to the token size), multi-head
self-attention, and a ReLU feed-forward. A final LayerNorm over d_model.

Generator: Linear(d_model, 128), ReLU, one BLSTM layer (128 per direction), ReLU, Linear(256, n_src * 2F): one
complex mask per source, real then imaginary parts, without an output activation, applied to the mixture STFT
and inverted (Asteroid's STFT filterbank, local/models/stft_masker.py). Every weight with more than one
dimension starts from Xavier-uniform (the authors' initialisation).

The spectral branch's token size is T, so T is a constant of the model (`seq_len`, the authors' 334 frames of a
4 s mixture). Inputs of other lengths are handled here by chunking: frames are cut into chunks of `seq_len`
with half a chunk of overlap (the last one ends at the last frame), each chunk is masked, and the chunks' masks are
overlap-added with a Hann window normalised by the sum of the windows, so every frame's mask is a weighted
mean of the chunks that hold it.

Departures from the authors' code, each with its reason:
  - sizes for a CPU and an 8 kHz, 2 s training mixture: d_model 64, 2 layers, seq_len 256 frames (2 s at
    stride 64 is 247 frames), c_out 64, d_out 32 (the authors: d_model 256, N = num_heads = 4 layers, c_out 64,
    d_out 32, 4 s at 16 kHz with hop 192);
  - attention dropout 0 (the authors: 0.1, hard-coded), so that PyTorch's fused attention kernel runs
    (`scaled_dot_product_attention`); dropout stays on the feed-forward and on every residual path;
  - the STFT is divided by its per-utterance RMS magnitude before the input projection, so that the masks do
    not depend on the input level (the authors feed the raw STFT);
  - nn.LayerNorm (biased variance inside the root) instead of the authors' LayerNorm (unbiased std, eps
    added to the std): the same normalisation up to a factor sqrt(n / (n - 1)) absorbed by its gain;
  - any test length by chunking (above); the authors' model takes only its training length;
  - the loss is the config's (local/training/losses.py). The authors trained a complex-spectrum MinLoss
    (`CSALoss`: the Frobenius norm of the masked mixture minus the source, real and imaginary parts, under PIT,
    its imaginary part with a sign error); `loss.domain: complex` with `loss.pit: true` is that objective with
    the sign right;
  - `output: direct` (the generator's output is the source STFT itself, scaled back by the input RMS) is
    offered next to the authors' `output: mask` for comparison;
  - `input_compression: c` (default 1, the authors' linear input) offers the power-law compressed complex STFT,
    |X|^c with the phase of X, as input (Wilson et al., "Exploring Tradeoffs in Models for Low-latency Speech
    Enhancement", IWAENC 2018, c = 0.3): the linear STFT spans the sounds' whole dynamic range, so a few loud bins
    dominate the input projection. The masks still act on the linear STFT. Measured against the default in
    docs/benchmarks.md ("The Spectro-Temporal Transformer");
  - `initial_mask: m` (conf/base/stt.yml: 0.5; null is the authors' initialisation) sets the real parts of the
    generator's output bias to m and the imaginary parts to 0: the complex masks start near m + 0j, so each
    estimate starts near its share of the mixture, as the LSTM masker's sigmoid masks start at 0.5. The authors'
    unbounded complex masks start at random (Xavier weights, PyTorch's random bias), and an SI-SDR objective spends
    its first steps undoing that;
  - learning rate 3e-3 (conf/base/stt.yml; the authors: Adam at 3e-4). On synth's validation views, 3e-3 learned
    faster than 1e-3 with either initialisation, and 3e-4 slowest (local/benchmarks/screen.py; docs/benchmarks.md,
    "Initial mask and learning rate").
"""
import math

import torch
from torch import nn
from torch.nn import functional as F

from local.models.stft_masker import STFTMasker
from local.models.vtf import sinusoidal_positions


class ConvSublayer(nn.Module):
    """The authors' compress/expand sub-layer on [B, n_tokens, size]: tokens as channels, the convolution along
    each token's features. With kernel size - d_out + ks2 the Conv1d leaves d_out - ks2 + 1 values per channel
    (one with the defaults: a bottleneck over every token at once), the transposed Conv1d expands them to d_out."""

    def __init__(self, n_tokens, size, c_out, d_out, ks2):
        super().__init__()
        if not 1 <= ks2 <= d_out < size + ks2:
            raise ValueError(f"model.d_out ({d_out}) and model.ks2 ({ks2}) need 1 <= ks2 <= d_out <= the token size "
                             f"({size}) + ks2 - 1")
        self.compress = nn.Sequential(nn.Conv1d(n_tokens, c_out, size - d_out + ks2), nn.BatchNorm1d(c_out), nn.ReLU())
        self.expand = nn.Sequential(nn.ConvTranspose1d(c_out, n_tokens, ks2), nn.BatchNorm1d(n_tokens), nn.ReLU())
        self.out = nn.Linear(d_out, size)

    def forward(self, x):
        return self.out(self.expand(self.compress(x)))


class SelfAttention(nn.Module):
    """Multi-head self-attention over the tokens of [B, n_tokens, size] through PyTorch's fused kernel."""

    def __init__(self, size, n_heads):
        super().__init__()
        if size % n_heads:
            raise ValueError(f"the token size {size} is not divisible by {n_heads} attention heads")
        self.n_heads = n_heads
        self.qkv = nn.Linear(size, 3 * size)
        self.out = nn.Linear(size, size)

    def _heads(self, x):
        batch, tokens, size = x.shape
        q, k, v = self.qkv(x).view(batch, tokens, 3, self.n_heads, size // self.n_heads).permute(2, 0, 3, 1, 4)
        return q, k, v

    def forward(self, x):
        q, k, v = self._heads(x)
        y = F.scaled_dot_product_attention(q, k, v)  # [B, heads, tokens, d_k]; no attention dropout
        return self.out(y.transpose(1, 2).reshape(x.shape))

    def weights(self, x):
        """The attention weights [B, heads, n_tokens, n_tokens], written out (softmax(QK^T / sqrt(d_k)))."""
        q, k, _ = self._heads(x)
        return torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1)


class BranchLayer(nn.Module):
    """One branch of a spectro-temporal layer (the authors' `ConvEncoderLayer`): pre-norm residual sub-layers
    conv -> self-attention -> feed-forward over [B, n_tokens, size]."""

    def __init__(self, n_tokens, size, n_heads, d_ff, dropout, c_out, d_out, ks2):
        super().__init__()
        self.norms = nn.ModuleList(nn.LayerNorm(size) for _ in range(3))
        self.conv = ConvSublayer(n_tokens, size, c_out, d_out, ks2)
        self.attention = SelfAttention(size, n_heads)
        self.feed_forward = nn.Sequential(nn.Linear(size, d_ff), nn.ReLU(), nn.Dropout(dropout), nn.Linear(d_ff, size))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        x = x + self.dropout(self.conv(self.norms[0](x)))
        x = x + self.dropout(self.attention(self.norms[1](x)))
        return x + self.dropout(self.feed_forward(self.norms[2](x)))


class SpectroTemporalLayer(nn.Module):
    """temporal(x) + spectral(x^T)^T on [B, T, d_model] (the authors' `DoubleEncoder` step)."""

    def __init__(self, seq_len, d_model, n_heads, spectral_heads, d_ff, dropout, c_out, d_out, ks2):
        super().__init__()
        self.temporal = BranchLayer(seq_len, d_model, n_heads, d_ff, dropout, c_out, d_out, ks2)  # tokens: frames
        self.spectral = BranchLayer(d_model, seq_len, spectral_heads, d_ff, dropout, c_out, d_out, ks2)  # channels

    def forward(self, x):
        return self.temporal(x) + self.spectral(x.transpose(1, 2)).transpose(1, 2)


class SpectroTemporalNet(nn.Module):
    """Complex STFT chunk [B, 2F, seq_len] -> complex masks (or estimates) [B, n_src, 2F, seq_len]."""

    def __init__(self, n_freq, n_src, seq_len, d_model, n_layers, n_heads, spectral_heads, d_ff, dropout, c_out,
                 d_out, ks2, generator_size, initial_mask=None):
        super().__init__()
        self.n_src, self.n_freq, self.d_model = n_src, n_freq, d_model
        self.embed = nn.Linear(2 * n_freq, d_model)
        self.register_buffer("positions", sinusoidal_positions(seq_len, d_model), persistent=False)
        self.input_dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            SpectroTemporalLayer(seq_len, d_model, n_heads, spectral_heads, d_ff, dropout, c_out, d_out, ks2)
            for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model)
        self.generator_in = nn.Linear(d_model, generator_size)
        self.blstm = nn.LSTM(generator_size, generator_size, batch_first=True, bidirectional=True)
        self.generator_out = nn.Linear(2 * generator_size, n_src * 2 * n_freq)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        if initial_mask is not None:  # every source's real mask part starts at this value, the imaginary at 0
            with torch.no_grad():
                bias = self.generator_out.bias.view(n_src, 2, n_freq)
                bias[:, 0].fill_(initial_mask)
                bias[:, 1].zero_()

    def forward(self, chunk):
        x = self.embed(chunk.transpose(1, 2)) * math.sqrt(self.d_model)  # [B, T, d_model]
        x = self.input_dropout(x + self.positions)
        for layer in self.layers:
            x = layer(x)
        x = F.relu(self.generator_in(self.norm(x)))
        x = self.generator_out(F.relu(self.blstm(x)[0]))  # [B, T, n_src * 2F]
        batch, frames, _ = x.shape
        return x.view(batch, frames, self.n_src, 2 * self.n_freq).permute(0, 2, 3, 1)


def chunk_starts(n_frames, seq_len):
    """Chunk onsets covering n_frames with chunks of seq_len, a hop of half a chunk,
    the last chunk ending at the end."""
    if n_frames <= seq_len:
        return [0]
    starts = list(range(0, n_frames - seq_len + 1, max(seq_len // 2, 1)))
    return starts if starts[-1] == n_frames - seq_len else starts + [n_frames - seq_len]


def overlap_add(network, tf_rep, seq_len):
    """`network` applied to chunks of seq_len frames of tf_rep [B, 2F, frames], overlap-added with a Hann window
    normalised by the windows' sum; a short input is zero-padded to one chunk and cut back."""
    frames = tf_rep.shape[-1]
    if frames <= seq_len:
        return network(F.pad(tf_rep, (0, seq_len - frames)))[..., :frames]
    window = torch.hann_window(seq_len + 2, periodic=False, dtype=tf_rep.dtype, device=tf_rep.device)[1:-1]
    out, weight = None, torch.zeros(frames, dtype=tf_rep.dtype, device=tf_rep.device)
    for start in chunk_starts(frames, seq_len):
        y = network(tf_rep[..., start : start + seq_len]) * window
        out = torch.zeros(*y.shape[:-1], frames, dtype=y.dtype, device=y.device) if out is None else out
        out[..., start : start + seq_len] += y
        weight[start : start + seq_len] += window
    return out / weight


def compress_magnitude(tf_rep, power, eps=1e-8):
    """[B, 2F, frames] complex STFT (real then imaginary parts) with each bin's magnitude m turned into m^power and
    its phase kept; power 1 returns the input."""
    if power == 1:
        return tf_rep
    n_freq = tf_rep.shape[1] // 2
    magnitude = (tf_rep[:, :n_freq] ** 2 + tf_rep[:, n_freq:] ** 2 + eps).sqrt()
    return tf_rep * (magnitude ** (power - 1)).repeat(1, 2, 1)


class SpectroTemporalMasker(nn.Module):
    """The masker of `STTMasker`: level normalisation, chunking, the network, and the output's form."""

    def __init__(self, network, seq_len, output, input_compression=1.0):
        super().__init__()
        self.network, self.seq_len, self.output = network, seq_len, output
        self.input_compression = float(input_compression)

    def forward(self, tf_rep):
        n_freq = tf_rep.shape[1] // 2
        scale = (tf_rep[:, :n_freq] ** 2 + tf_rep[:, n_freq:] ** 2).mean(dim=(1, 2), keepdim=True).sqrt() + 1e-8
        if self.output == "direct":  # the estimate is in the input's (linear) units
            return overlap_add(self.network, tf_rep / scale, self.seq_len) * scale.unsqueeze(1)
        return overlap_add(self.network, compress_magnitude(tf_rep / scale, self.input_compression), self.seq_len)


class STTMasker(STFTMasker):
    """Spectro-Temporal Transformer on the complex STFT (see the module docstring)."""

    mask_type = "complex"

    def __init__(self, n_src, seq_len=256, d_model=64, n_layers=2, n_heads=4, spectral_heads=2, d_ff=256,
                 dropout=0.1, c_out=64, d_out=32, ks2=32, generator_size=128, output="mask", input_compression=1.0,
                 initial_mask=None,
                 n_filters=256, kernel_size=256, stride=64, sample_rate=8000):
        if d_model % n_heads:
            raise ValueError(f"model.d_model ({d_model}) must be divisible by model.n_heads ({n_heads})")
        if seq_len % spectral_heads:
            raise ValueError(f"model.seq_len ({seq_len}) must be divisible by model.spectral_heads ({spectral_heads})")
        if output not in ("mask", "direct"):
            raise ValueError(f"model.output must be mask (the authors') or direct, got {output!r}")
        try:
            input_compression = float(input_compression)
        except (TypeError, ValueError):
            raise ValueError(f"model.input_compression must be a number in (0, 1], got {input_compression!r}") from None
        if not 0 < input_compression <= 1:
            raise ValueError(f"model.input_compression must be in (0, 1] (1: the authors' linear STFT), "
                             f"got {input_compression!r}")
        if output == "direct" and float(input_compression) != 1:
            raise ValueError("model.input_compression applies to output: mask only (a direct estimate is linear)")
        if initial_mask is not None:
            if output == "direct":
                raise ValueError("model.initial_mask applies to output: mask only")
            try:
                initial_mask = float(initial_mask)
            except (TypeError, ValueError):
                raise ValueError(f"model.initial_mask must be null or a number (e.g. 0.5), "
                                 f"got {initial_mask!r}") from None
        network = SpectroTemporalNet(n_filters // 2 + 1, n_src, seq_len, d_model, n_layers, n_heads, spectral_heads,
                                     d_ff, dropout, c_out, d_out, ks2, generator_size, initial_mask)
        super().__init__(SpectroTemporalMasker(network, seq_len, output, input_compression), n_src, n_filters,
                         kernel_size, stride, sample_rate)
        self._masker_args = dict(seq_len=seq_len, d_model=d_model, n_layers=n_layers, n_heads=n_heads,
                                 spectral_heads=spectral_heads, d_ff=d_ff, dropout=dropout, c_out=c_out, d_out=d_out,
                                 ks2=ks2, generator_size=generator_size, output=output,
                                 input_compression=float(input_compression), initial_mask=initial_mask)

    def apply_masks(self, tf_rep, est_masks):
        if self._masker_args["output"] == "direct":  # the network's output is the estimate itself
            return est_masks
        return super().apply_masks(tf_rep, est_masks)

"""DPCL-DPRNN: deep clustering on a dual-path RNN, with an optional Chimera++ mask-inference head.

Deep clustering (Hershey et al. 2016, "Deep clustering: discriminative embeddings for segmentation
and separation") maps every time-frequency bin of the mixture to a unit-norm D-dimensional embedding
whose affinities match the ideal binary partition of the bins by dominant source; at test time
k-means over the embeddings of the active bins gives binary masks. Here the embedding network is the
dual-path RNN of Luo, Chen and Yoshioka 2020 ("Dual-path RNN: efficient long sequence modeling for
time-domain single-channel speech separation") run over STFT frames: Asteroid's `DPRNN` masker
(bottleneck, segmentation into chunks of K frames with 50% overlap, intra-chunk BLSTM, inter-chunk
(B)LSTM, overlap-add), whose output layer produces D values per bin instead of a mask.

Chimera++ (Wang, Le Roux and Hershey 2018, "Alternative objective functions for deep clustering")
adds a mask-inference (MI) head from the same backbone: n_src softmax masks per bin, trained jointly
(`loss.alpha` weighs the two objectives); at test time either head can separate (`inference`).

`model.backbone: blstm` replaces the dual-path RNN by the network of Hershey et al. 2016 themselves, a BLSTM stack
over frames (the residual stack of local/models/lstm.py, the backbone of uPIT-BLSTM here): on real voices
(debian_speech) it tells whether the deep-clustering objective or the DPRNN backbone fails (docs/speakers.md).

Embedding size: 40 as in Hershey et al. 2016 (Chimera++ used 20). `conf/dpcl_dprnn_2spk_small_d2.yml` departs from
both with one dimension per speaker: the whitened loss DC-W reaches its floor D - C without clusters when D > C, and
only with clusters when D = C (tests/test_deep_clustering.py; measured in docs/speakers.md, diagnostic g).

Features: the per-utterance normalised log-magnitude STFT (`log_magnitude_features`). Per-utterance
statistics need no training-set statistics file to travel with the model, make the network
independent of the input level, and are what the embeddings see identically in training and test.
Training targets and test-time masks use the same padded STFT (`STFTMasker.stft`), so the framing
of targets and separation always agree.
"""
import torch
from asteroid.dsp.vad import ebased_vad
from asteroid.masknn import DPRNN
from asteroid_filterbanks.transforms import mag
from torch import nn

from local.models.kmeans import batched_kmeans
from local.models.lstm import ResidualBLSTMMasker
from local.models.stft_masker import STFTMasker, log_magnitude_features


def bin_weights(mixture_mag, vad_db, kind):
    """Weights of the time-frequency bins [B, F, frames] in the deep-clustering loss and in k-means: `vad`, 1 for
    the bins within `vad_db` of the loudest (Asteroid's `ebased_vad`), 0 elsewhere; `magnitude`, the mixture
    magnitude |X| on those bins, so that loud bins, which carry the separated signal's energy, count more than
    bins near the threshold (the magnitude-ratio weights of Wang, Le Roux and Hershey 2018, Sec. 3.1; every use
    here is scale free: the loss divides by (sum W)^2, k-means by the weights' sum)."""
    active = ebased_vad(mixture_mag, vad_db).to(mixture_mag.dtype)
    return active if kind == "vad" else active * mixture_mag


class DPCLNet(nn.Module):
    """[B, 2F, frames] STFT -> unit-norm embeddings [B, F, frames, D] (+ MI masks [B, n_src, F, frames])."""

    def __init__(self, n_freq, n_src, embedding_dim, mi_head, inference, vad_db, kmeans_iterations, kmeans_restarts,
                 dprnn_args, embedding_activation="linear", kmeans_weights="vad", backbone="dprnn"):
        super().__init__()
        self.n_freq, self.n_src, self.embedding_dim = n_freq, n_src, embedding_dim
        self.mi_head, self.inference, self.vad_db = mi_head, inference, vad_db
        self.embedding_activation, self.kmeans_weights = embedding_activation, kmeans_weights
        self.kmeans_iterations, self.kmeans_restarts = kmeans_iterations, kmeans_restarts
        self.n_out = embedding_dim + (n_src if mi_head else 0)
        self.backbone = backbone
        if backbone == "dprnn":
            self.dprnn = DPRNN(in_chan=n_freq, n_src=1, out_chan=n_freq * self.n_out, mask_act="linear", **dprnn_args)
        else:  # Hershey et al. 2016's own network: a BLSTM stack over frames (here the residual stack of lstm.py)
            self.blstm = ResidualBLSTMMasker(n_freq, self.n_out, dprnn_args["hid_size"], dprnn_args["n_repeats"],
                                             dprnn_args["dropout"], "linear")

    def heads(self, tf_rep):
        """{'embedding': [B, F, frames, D] unit norm, 'mi_masks': [B, n_src, F, frames] or None}."""
        if self.backbone == "dprnn":
            out = self.dprnn(log_magnitude_features(tf_rep))  # [B, 1, n_out * F, frames]
        else:
            out = self.blstm(tf_rep)  # [B, n_out, F, frames]
        batch, frames = out.shape[0], out.shape[-1]
        out = out.view(batch, self.n_out, self.n_freq, frames)
        # one copy into [B, F, frames, D] order: tanh, the unit norm and the loss then run over contiguous rows of D
        # values instead of values F * frames apart (docs/speakers.md, "Step time")
        embedding = out[:, : self.embedding_dim].permute(0, 2, 3, 1).contiguous()
        if self.embedding_activation == "tanh":  # Hershey et al. 2016 and Isik et al. 2016: tanh, then unit norm
            embedding = torch.tanh(embedding)
        # the unit norm of nn.functional.normalize (x / max(|x|, 1e-12)), written as one product: its division and
        # the backward of its broadcast cost more than the BLSTM here
        embedding = embedding * embedding.pow(2).sum(dim=-1, keepdim=True).clamp(min=1e-24).rsqrt()
        mi_masks = torch.softmax(out[:, self.embedding_dim :], dim=1) if self.mi_head else None
        return {"embedding": embedding, "mi_masks": mi_masks}

    def forward(self, tf_rep):
        """Test-time masks [B, n_src, F, frames]: k-means over active-bin embeddings, or the MI head."""
        heads = self.heads(tf_rep)
        if self.inference == "mi":
            return heads["mi_masks"]
        embedding = heads["embedding"]
        batch, n_freq, frames, dim = embedding.shape
        weights = bin_weights(mag(tf_rep), self.vad_db, self.kmeans_weights).reshape(batch, -1).to(embedding.dtype)
        labels, _ = batched_kmeans(embedding.reshape(batch, -1, dim), weights, self.n_src,
                                   self.kmeans_iterations, n_init=self.kmeans_restarts)
        masks = nn.functional.one_hot(labels, self.n_src).to(embedding.dtype)  # [B, F*frames, n_src]
        return masks.view(batch, n_freq, frames, self.n_src).permute(0, 3, 1, 2)


class DPCLDPRNN(STFTMasker):
    """Deep clustering (and optionally Chimera++) on a dual-path RNN over STFT frames."""

    def __init__(self, n_src, embedding_dim=40, mi_head=False, inference="kmeans", vad_db=40.0,
                 kmeans_iterations=20, kmeans_restarts=3, embedding_activation="linear", kmeans_weights="vad",
                 bn_chan=64, hid_size=128, chunk_size=100, hop_size=None, n_repeats=6,
                 norm_type="gLN", bidirectional=True, rnn_type="LSTM", num_layers=1, dropout=0.0,
                 backbone="dprnn", n_filters=256, kernel_size=256, stride=64, sample_rate=8000):
        if isinstance(embedding_dim, bool) or not isinstance(embedding_dim, int) or embedding_dim < 1:
            raise ValueError(f"model.embedding_dim must be a positive integer, got {embedding_dim!r}")
        if backbone not in ("dprnn", "blstm"):
            raise ValueError(f"model.backbone must be dprnn or blstm, got {backbone!r}")
        if inference not in ("kmeans", "mi"):
            raise ValueError(f"model.inference must be kmeans or mi, got {inference!r}")
        if embedding_activation not in ("linear", "tanh"):
            raise ValueError(f"model.embedding_activation must be linear or tanh, got {embedding_activation!r}")
        if kmeans_weights not in ("vad", "magnitude"):
            raise ValueError(f"model.kmeans_weights must be vad or magnitude, got {kmeans_weights!r}")
        if inference == "mi" and not mi_head:
            raise ValueError("model.inference: mi needs model.mi_head: true")
        dprnn_args = dict(bn_chan=bn_chan, hid_size=hid_size, chunk_size=chunk_size, hop_size=hop_size,
                          n_repeats=n_repeats, norm_type=norm_type, bidirectional=bidirectional, rnn_type=rnn_type,
                          num_layers=num_layers, dropout=dropout)
        masker = DPCLNet(n_filters // 2 + 1, n_src, embedding_dim, mi_head, inference, vad_db, kmeans_iterations,
                         kmeans_restarts, dprnn_args, embedding_activation, kmeans_weights, backbone)
        super().__init__(masker, n_src, n_filters, kernel_size, stride, sample_rate)
        self._masker_args = dict(embedding_dim=embedding_dim, mi_head=mi_head, inference=inference, vad_db=vad_db,
                                 kmeans_iterations=kmeans_iterations, kmeans_restarts=kmeans_restarts,
                                 embedding_activation=embedding_activation, kmeans_weights=kmeans_weights,
                                 backbone=backbone, **dprnn_args)

    @property
    def oracle_bound(self):
        """k-means assigns every bin to one source: the ideal binary mask bounds it; the MI head's softmax
        masks are real masks in [0, 1]: the truncated phase-sensitive mask bounds them."""
        return "ibm" if self._masker_args["inference"] == "kmeans" else "psm"

    def training_outputs(self, mixture, sources):
        """What the deep-clustering objective needs, on the same padded STFT as separation: embeddings, MI
        masks, the mixture STFT [B, 2F, frames] and magnitude [B, F, frames], the sources' STFTs
        [B, n_src, 2F, frames] and magnitudes [B, n_src, F, frames]."""
        mix_tf = self.stft(mixture)
        outputs = self.masker.heads(mix_tf)
        batch, n_src, length = sources.shape
        source_tf = self.stft(sources.reshape(batch * n_src, length))
        outputs["mixture_tf"], outputs["mixture_mag"] = mix_tf, mag(mix_tf)
        outputs["source_tf"] = source_tf.view(batch, n_src, 2 * self.n_freq, -1)
        outputs["source_mag"] = mag(source_tf).view(batch, n_src, self.n_freq, -1)
        return outputs

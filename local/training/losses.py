"""Training objectives on waveform estimates [B, n_src, T] against references [B, n_src, T].

Every loss is written in its *pairwise* form (a [B, n_src, n_src] matrix of the loss of estimate i
against reference j), so that the same function serves both assignments:
  - permutation invariant (`loss.pit: true`): Asteroid's `PITLossWrapper(pit_from="pw_mtx")` takes the
    best assignment (the "MinLoss" of the category study; Yu et al. 2017, "Permutation invariant
    training of deep models for speaker-independent multi-talker speech separation");
  - fixed order (`loss.pit: false`): estimate i is scored against reference i, the order of the view
    CSV's sources (the diagonal of the matrix).

Losses (spectrogram losses use Asteroid's STFT at the experiment's filterbank settings, in the domain
`loss.domain`: `magnitude` |S|; `complex`, the real and imaginary parts of S; `compressed`, the real and
imaginary parts of the power-law compressed c(S) = |S|^p e^{j angle S} with p = `loss.compression`, the
objective of Looking to Listen (Ephrat et al. 2018, p = 0.3), applied to estimate and reference alike so that
loud bins do not dominate):
  euclidean       mean squared distance between estimated and reference spectrograms.
  correlation     1 - Pearson correlation between estimated and reference spectrograms, per
                  source (the category study's correlation objective): insensitive to the scale and
                  offset of an estimate, it rewards getting the spectro-temporal shape right.
  discriminative  Huang et al. 2014/2015: the euclidean distance to the own reference minus gamma times
                  the mean distance to the other references, which pushes an estimate away from the
                  other sources (gamma = loss.gamma; 0 gives euclidean).
  sisdr           negative scale-invariant SDR (Le Roux et al. 2019, "SDR - half-baked or well done?"),
                  Asteroid's `pairwise_neg_sisdr`.
  deep_clustering the objective of DPCL-DPRNN (and Chimera++ with a mask-inference head); it needs the
                  model's embeddings, not waveforms (see DeepClusteringObjective): `loss.dc` classic
                  (Hershey et al. 2016) or whitened (DC-W), `loss.mi` tpsa or magnitude.
"MinLoss" is any of the waveform losses with `loss.pit: true`: the minimum over the n_src! assignments, found by
Asteroid's PITLossWrapper (exhaustively up to 3 sources, by the Hungarian algorithm from 4 on).
"""
import torch
from asteroid.losses import PITLossWrapper, pairwise_neg_sisdr, singlesrc_neg_sisdr
from asteroid_filterbanks import STFTFB, Encoder
from asteroid_filterbanks.transforms import mag
from torch import nn

from local.common.errors import RecipeError
from local.models.dpcl import bin_weights

DOMAINS = ("magnitude", "complex", "compressed")


class PairwiseEuclideanSpectrogram(nn.Module):
    """Pairwise mean squared error between spectrograms: out[b, i, j] = mean_{f,t} (S(E_i) - S(R_j))^2.

    S is the magnitude STFT (`domain="magnitude"`), the complex STFT as real and imaginary parts
    (`domain="complex"`), or the compressed complex STFT |S|^p e^{j angle S} (`domain="compressed"`).
    Complex-mask models (GAB) need a domain with the phase: a magnitude loss leaves the phase their masks
    apply unconstrained.
    """

    def __init__(self, n_filters, kernel_size, stride, sample_rate, domain="magnitude", compression=0.3):
        super().__init__()
        if domain not in DOMAINS:
            raise RecipeError(f"loss.domain must be one of {', '.join(DOMAINS)}, got {domain!r}")
        self.domain, self.compression = domain, float(compression)
        self.stft = Encoder(STFTFB(n_filters=n_filters, kernel_size=kernel_size, stride=stride,
                                   sample_rate=sample_rate))

    def features(self, wav):
        """[B, n_src, T] -> [B, n_src, F (or 2F), frames]."""
        batch, n_src, time = wav.shape
        spec = self.stft(wav.reshape(batch * n_src, 1, time))
        if self.domain == "magnitude":
            spec = mag(spec)
        elif self.domain == "compressed":
            spec = compress(spec, self.compression)
        return spec.reshape(batch, n_src, *spec.shape[1:])

    def forward(self, est, ref):
        e, r = self.features(est), self.features(ref)
        return ((e.unsqueeze(2) - r.unsqueeze(1)) ** 2).mean(dim=(-2, -1))


class PairwiseCorrelationSpectrogram(PairwiseEuclideanSpectrogram):
    """out[b, i, j] = 1 - Pearson r between the spectrograms of E_i and R_j over all bins and frames.

    The norm of the centred spectrogram is floored at a small fraction of the spectrogram's own energy
    (not at an absolute 1e-8): d(x / |x|)/dx grows as 1 / |x|, so a nearly constant estimate would
    otherwise get an exploding gradient."""

    floor = 1e-6  # of the spectrogram's energy

    def forward(self, est, ref):
        def standardise(x):
            x = x.flatten(start_dim=2)
            energy = x.detach().pow(2).sum(dim=-1, keepdim=True)
            x = x - x.mean(dim=-1, keepdim=True)
            return x / torch.sqrt(x.pow(2).sum(dim=-1, keepdim=True) + self.floor * energy + 1e-12)

        e, r = standardise(self.features(est)), standardise(self.features(ref))
        return 1.0 - torch.einsum("bif,bjf->bij", e, r)


class PairwiseDiscriminative(nn.Module):
    """Huang et al.'s discriminative objective in pairwise form, so that PIT can assign it.

    For an assignment pi, L = sum_i [D(i, pi(i)) - gamma / (n - 1) * sum_{k != pi(i)} D(i, k)], with D the
    pairwise euclidean matrix. Writing R_i = sum_k D(i, k), each term is
    D'(i, j) = (1 + g) D(i, j) - g R_i with g = gamma / (n - 1): a pairwise matrix whose assigned sum is L.
    """

    def __init__(self, euclidean, gamma):
        super().__init__()
        self.euclidean, self.gamma = euclidean, float(gamma)

    def forward(self, est, ref):
        d = self.euclidean(est, ref)
        g = self.gamma / max(d.shape[1] - 1, 1)
        return (1 + g) * d - g * d.sum(dim=2, keepdim=True)


def compress(spec, power, eps=1e-8):
    """|S|^p e^{j angle S} of an STFT in Asteroid's layout [..., 2F, frames] (real parts, then imaginary);
    |S| is smoothed as sqrt(|S|^2 + eps) so that the gradient stays finite in silent bins."""
    n_freq = spec.shape[-2] // 2
    power_spec = spec[..., :n_freq, :] ** 2 + spec[..., n_freq:, :] ** 2
    scale = (power_spec + eps) ** ((power - 1.0) / 2)
    return spec * torch.cat([scale, scale], dim=-2)


class FixedOrderLoss(nn.Module):
    """Mean of the diagonal of a pairwise loss: estimate i is always scored against reference i."""

    def __init__(self, pairwise_loss):
        super().__init__()
        self.pairwise_loss = pairwise_loss

    def forward(self, est, ref):
        return torch.diagonal(self.pairwise_loss(est, ref), dim1=1, dim2=2).mean()


def deep_clustering_loss(embedding, target, weights, n_src):
    """Deep-clustering loss in its low-rank form (Hershey et al. 2016; Wang, Le Roux, Hershey 2018):

        || V^T W V ||^2 - 2 || V^T W Y ||^2 + || Y^T W Y ||^2   ==   || W^1/2 (V V^T - Y Y^T) W^1/2 ||^2_F

    with V [N, D] the embeddings, Y [N, n_src] the one-hot dominant source of every bin and W the bin
    weights (1 for active bins, 0 for silent ones), divided by (sum W)^2 per utterance so that the
    value does not grow with the utterance length (the affinity matrix has N^2 entries), then averaged.
    Memory grows linearly with N: the N x N affinity matrix is never built.

    Written here rather than taken from Asteroid's `deep_clustering_loss` because that one counts the
    sources as the distinct target indices in the batch (wrong when a source dominates no bin) and
    divides by the active-bin count, not its square, so its scale depends on the utterance length.

    Args: embedding [B, N, D]; target [B, N] long in 0..n_src-1; weights [B, N]; n_src int.
    """
    root_w = weights.clamp(min=0).sqrt().unsqueeze(-1)
    v = embedding * root_w
    y = torch.nn.functional.one_hot(target, n_src).to(embedding.dtype) * root_w
    frob = lambda a, b: (a.transpose(1, 2) @ b).pow(2).sum(dim=(1, 2))
    cost = frob(v, v) - 2 * frob(v, y) + frob(y, y)
    return (cost / weights.sum(dim=1).clamp(min=1e-8) ** 2).mean()


def whitened_deep_clustering_loss(embedding, target, weights, n_src, eps=1e-6):
    """Whitened deep-clustering loss DC-W of Chimera++ (Wang, Le Roux and Hershey 2018, "Alternative
    objective functions for deep clustering", Eq. 7):

        || V (V^T V)^-1 V^T - Y (Y^T Y)^-1 Y^T ||^2_F  =  D - 2 || (V^T V)^-1/2 V^T Y (Y^T Y)^-1/2 ||^2_F + C

    with V, Y weighted by W^1/2 as in `deep_clustering_loss` (D the embedding size, C the number of sources).
    Whitening makes the loss independent of how many bins each source dominates and of the utterance length.
    eps regularises the two small matrices (D x D and C x C) for sources that dominate no bin.
    """
    root_w = weights.clamp(min=0).sqrt().unsqueeze(-1)
    v = embedding * root_w
    y = torch.nn.functional.one_hot(target, n_src).to(embedding.dtype) * root_w
    dim = v.shape[-1]

    def inv_sqrt(m):
        values, vectors = torch.linalg.eigh(m + eps * torch.eye(m.shape[-1], dtype=m.dtype, device=m.device))
        return vectors @ torch.diag_embed(values.clamp(min=eps).rsqrt()) @ vectors.transpose(-1, -2)

    vtv, yty, vty = v.transpose(1, 2) @ v, y.transpose(1, 2) @ y, v.transpose(1, 2) @ y
    cross = inv_sqrt(vtv) @ vty @ inv_sqrt(yty)
    return (dim + n_src - 2 * cross.pow(2).sum(dim=(1, 2))).mean()


def truncated_psa_target(mixture_tf, source_tf):
    """Truncated phase-sensitive target T_0^{|X|}(|S_c| cos(angle S_c - angle X)) [B, n_src, F, frames] from
    the mixture STFT [B, 2F, frames] and the sources' [B, n_src, 2F, frames] (Erdogan et al. 2015)."""
    n_freq = mixture_tf.shape[-2] // 2
    mix = mixture_tf.unsqueeze(1)
    real = source_tf[..., :n_freq, :] * mix[..., :n_freq, :] + source_tf[..., n_freq:, :] * mix[..., n_freq:, :]
    mix_mag = mag(mixture_tf).unsqueeze(1)
    projected = real / mix_mag.clamp(min=1e-8)  # |S| cos(angle S - angle X) = Re(S conj X) / |X|
    return torch.minimum(projected.clamp(min=0.0), mix_mag)


class DeepClusteringObjective(nn.Module):
    """alpha x deep-clustering loss (+ (1 - alpha) x the mask-inference loss when the model has an MI head).

    Targets: the dominant source of every bin (ideal binary partition); weights (`dc_weights`): the bins within
    `vad_db` of the mixture's loudest bin (Asteroid's `ebased_vad`), or their mixture magnitude
    (local/models/dpcl.py `bin_weights`).
      dc: classic   the DC loss of Hershey et al. 2016 (`deep_clustering_loss`);
          whitened  DC-W, the deep-clustering term of Chimera++ (`whitened_deep_clustering_loss`).
      mi: tpsa      Chimera++'s mask-inference loss: the L1 distance between the masked mixture magnitude
                    M_c |X| and the truncated phase-sensitive target (`truncated_psa_target`), permutation
                    invariant, divided by sum |X| per utterance so that it is level free (our
                    normalisation; the paper gives none);
          magnitude the earlier "magnitude spectrum approximation": squared error between M_c |X| and |S_c|,
                    divided by the sources' energy.
    Chimera++ as published (Wang, Le Roux and Hershey 2018) is dc whitened, mi tpsa, alpha 0.975.
    """

    uses_model = True  # called as loss(model, mixture, sources), see SeparationSystem

    def __init__(self, alpha, vad_db, dc="classic", mi="magnitude", dc_weights="vad"):
        super().__init__()
        if dc not in ("classic", "whitened"):
            raise RecipeError(f"loss.dc must be classic or whitened, got {dc!r}")
        if dc_weights not in ("vad", "magnitude"):
            raise RecipeError(f"loss.dc_weights must be vad or magnitude, got {dc_weights!r}")
        self.dc_weights = dc_weights
        if mi not in ("tpsa", "magnitude"):
            raise RecipeError(f"loss.mi must be tpsa or magnitude, got {mi!r}")
        self.alpha, self.vad_db, self.dc, self.mi = float(alpha), float(vad_db), dc, mi
        self.mi_pit = PITLossWrapper(self.pairwise_tpsa if mi == "tpsa" else self.pairwise_mi, pit_from="pw_mtx")

    @staticmethod
    def pairwise_mi(estimates, references):
        energy = references.pow(2).sum(dim=(1, 2, 3)).clamp(min=1e-8)  # sources' total energy per utterance
        diff = (estimates.unsqueeze(2) - references.unsqueeze(1)).pow(2).sum(dim=(-2, -1))  # [B, est, ref]
        return diff / energy[:, None, None]

    @staticmethod
    def pairwise_tpsa(estimates, targets, mixture_total):
        diff = (estimates.unsqueeze(2) - targets.unsqueeze(1)).abs().sum(dim=(-2, -1))  # [B, est, ref]
        return diff / mixture_total[:, None, None]

    def forward(self, model, mixture, sources):
        out = model.training_outputs(mixture, sources)
        batch, n_freq, frames, dim = out["embedding"].shape
        # max().indices, not argmax(): the same first index of the maximum, and 50 times faster over this short
        # middle axis on CPU (97 against 2 ms for 16 mixtures of 2 s)
        target = out["source_mag"].max(dim=1).indices.reshape(batch, -1)
        active = (bin_weights(out["mixture_mag"], self.vad_db, self.dc_weights).reshape(batch, -1)
                  .to(out["embedding"].dtype))
        n_src = out["source_mag"].shape[1]
        dc_loss = whitened_deep_clustering_loss if self.dc == "whitened" else deep_clustering_loss
        loss = dc_loss(out["embedding"].reshape(batch, -1, dim), target, active, n_src)
        if out["mi_masks"] is None:
            return loss
        estimates = out["mi_masks"] * out["mixture_mag"].unsqueeze(1)
        if self.mi == "tpsa":
            mi_loss = self.mi_pit(estimates, truncated_psa_target(out["mixture_tf"], out["source_tf"]),
                                  mixture_total=out["mixture_mag"].sum(dim=(1, 2)).clamp(min=1e-8))
        else:
            mi_loss = self.mi_pit(estimates, out["source_mag"])
        return self.alpha * loss + (1 - self.alpha) * mi_loss


LOSSES = ("euclidean", "correlation", "discriminative", "sisdr", "deep_clustering")


def pairwise_loss(loss_cfg, filterbank, sample_rate):
    name = loss_cfg["name"]
    spec_args = dict(sample_rate=sample_rate, domain=loss_cfg["domain"], compression=loss_cfg["compression"],
                     **filterbank)
    if name == "euclidean":
        return PairwiseEuclideanSpectrogram(**spec_args)
    if name == "correlation":
        return PairwiseCorrelationSpectrogram(**spec_args)
    if name == "discriminative":
        return PairwiseDiscriminative(PairwiseEuclideanSpectrogram(**spec_args), loss_cfg["gamma"])
    if name == "sisdr":
        return pairwise_neg_sisdr
    raise RecipeError(f"unknown loss.name '{name}'; known losses: {', '.join(LOSSES)}")


class QueryExtractionLoss(nn.Module):
    """The objective of label-queried extraction (local/models/query_lstm.py), on batches ((mixture, query), target)
    of local/data/queries.py: negative SI-SDR of the output on positive queries; on negative queries (a silent
    target) the output's level relative to the mixture with a soft floor, 10 log10(|y|^2 / |x|^2 + tau),
    tau = 10^(negative_floor_db / 10), weighted by `negative_weight` (a query for an absent sound should return
    silence, and SI-SDR is undefined on silence). The mean over the batch's items.

    The floor is MixIT's loss for an all-zero reference (Wisdom et al. 2020, "Unsupervised sound separation using
    mixture invariant training", Sec. 3: 10 log10(|y|^2 + tau |x|^2), there with tau for 30 dB): without it the log
    pulls with the same force at -100 dB as at -10 dB, and a 10-minute run spent its updates driving negatives to
    -100 dB while its positive queries reached 6.44 dB SI-SDRi, 5.6 dB below separate-then-pick (docs/extraction.md).
    """

    uses_model = True

    def __init__(self, negative_weight=1.0, negative_floor_db=-30.0, presence_weight=1.0, missed_weight=0.0,
                 eps=1e-8):
        super().__init__()
        self.negative_weight, self.presence_weight, self.eps = float(negative_weight), float(presence_weight), eps
        self.missed_weight = float(missed_weight)
        self.tau = 10.0 ** (float(negative_floor_db) / 10.0)

    def forward(self, model, inputs, target):
        mixture, query, *present = inputs  # `present`: the mixture's categories, multi-hot, for a tagging gate
        if getattr(model, "presence_gate", False):
            estimate, logit, tags = model.masked_and_presence(mixture, query, return_tags=True)
            if tags is not None and not present:
                raise ValueError("a tagging presence gate needs the mixture's categories (QueryDataset(tags=True))")
            return self.from_estimates(estimate[:, 0], mixture, target, logit, tags,
                                       present[0] if tags is not None else None)
        return self.from_estimates(model(mixture, query)[:, 0], mixture, target)

    def from_estimates(self, estimate, mixture, target, presence_logit=None, tags=None, present=None):
        """`estimate` the model's output, or with a presence gate (local/models/query_lstm.py) the masked sound
        before the gate and `presence_logit` the gate's logit. With the gate: SI-SDR of the masked sound on
        positive queries (the gate, a scale, cannot change it); on negative queries the level of the gated output
        with the masked sound held fixed (detached), so that silence is asked of the gate, not of the mask; and
        `presence_weight` x the binary cross-entropy of the gate against "the queried sound is in the mixture";
        and on positive queries `missed_weight` x -10 log10(g^2 + tau), the gated output's level deficit relative
        to the masked sound with the negatives' floor: the level term mirrored, so that doubt does not cost only
        the positives (with the negatives' term alone, in dB and unbounded above the floor, the gate of a sound it
        cannot tell answers silence: docs/extraction.md, "Where the gate sits").

        With a tagging gate (`tags` [B, n_labels], the tagger's logits, and `present` [B, n_labels], the mixture's
        categories multi-hot), the cross-entropy covers every category, present or not, and not only the queried
        one: `presence_weight` x the sum over categories of the binary cross-entropy, divided by the queries of the
        mixture, so that each mixture counts its categories once (audio tagging, PANNs, Kong et al. 2020). A
        mixture of 5 of 10 categories then trains the gate on 10 answers instead of 6 queries."""
        negative = target.pow(2).sum(-1) == 0
        loss = estimate.new_zeros(())
        if (~negative).any():
            loss = loss + singlesrc_neg_sisdr(estimate[~negative], target[~negative]).sum()
        if negative.any():
            silent = estimate[negative]
            if presence_logit is not None:
                silent = torch.sigmoid(presence_logit[negative])[:, None] * silent.detach()
            ratio = silent.pow(2).sum(-1) / mixture[negative].pow(2).sum(-1).clamp_min(self.eps)
            loss = loss + self.negative_weight * (10 * torch.log10(ratio + self.tau)).sum()
        if presence_logit is not None and self.missed_weight and (~negative).any():
            gate = torch.sigmoid(presence_logit[~negative])
            loss = loss - self.missed_weight * (10 * torch.log10(gate.pow(2) + self.tau)).sum()
        if tags is not None:
            per_item = nn.functional.binary_cross_entropy_with_logits(tags, present.to(tags.dtype), reduction="none")
            loss = loss + self.presence_weight * (per_item.sum(-1) / queries_per_mixture(mixture)).sum()
        elif presence_logit is not None:
            loss = loss + self.presence_weight * nn.functional.binary_cross_entropy_with_logits(
                presence_logit, (~negative).to(presence_logit.dtype), reduction="sum")
        return loss / len(target)


def queries_per_mixture(mixture):
    """[B] how many items of the batch share each item's mixture [B, T]."""
    _, which, counts = torch.unique(mixture, dim=0, return_inverse=True, return_counts=True)
    return counts[which].to(mixture.dtype)


def batch_loss(loss, model, mixture, sources):
    """The loss of one batch: objectives that need the model's inner outputs (`uses_model`, e.g. deep clustering's
    embeddings) take the model, the others its waveform estimates."""
    if getattr(loss, "uses_model", False):
        return loss(model, mixture, sources)
    return loss(model(mixture), sources)


def make_loss(cfg):
    """The training objective of an experiment config: a module (est, ref) -> scalar, or for
    deep clustering (model, mixture, sources) -> scalar."""
    loss_cfg = cfg["loss"]
    if loss_cfg["name"] == "query_sisdr":
        return QueryExtractionLoss(loss_cfg["negative_weight"], loss_cfg["negative_floor_db"],
                                   loss_cfg["presence_weight"], loss_cfg["missed_weight"])
    if loss_cfg["name"] == "deep_clustering":
        return DeepClusteringObjective(loss_cfg["alpha"], loss_cfg["vad_db"], loss_cfg["dc"], loss_cfg["mi"],
                                       loss_cfg["dc_weights"])
    pairwise = pairwise_loss(loss_cfg, cfg["filterbank"], int(cfg["data"]["sample_rate"]))
    if loss_cfg["pit"]:
        return PITLossWrapper(pairwise, pit_from="pw_mtx")
    return FixedOrderLoss(pairwise)

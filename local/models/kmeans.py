"""Batched, weighted k-means in torch, for deep-clustering inference.

All utterances of a batch, and all restarts, are clustered at once on their embeddings (one matrix product
per iteration), instead of one scikit-learn call per utterance: evaluation of a test set is bounded by the
network, not by the clustering. Deterministic for a given seed:
- restart 0 starts from farthest points (the first centre is the active point with the largest weighted
  projection on the mean embedding, then repeatedly the active point farthest from the chosen centres);
- restarts 1 .. n_init-1 start from k-means++ seeds (Arthur and Vassilvitskii 2007) drawn from seeded
  uniforms shared by every utterance, so an utterance's result does not depend on the rest of its batch;
and each utterance keeps the restart with the lowest weighted inertia, as scikit-learn's `n_init` does
(a single farthest-point start seeds from outliers and can understate deep clustering).
"""
import torch

from local.common import seeding


def _farthest_point_init(points, active, w, k):
    batch, n, _ = points.shape
    mean = (points * w).sum(1, keepdim=True) / w.sum(1, keepdim=True).clamp(min=1e-8)
    score = (points * mean).sum(-1).masked_fill(~active, float("-inf"))
    centres = [points[torch.arange(batch), score.argmax(dim=1)]]
    min_dist = torch.full((batch, n), float("inf"), device=points.device)
    for _ in range(1, k):
        min_dist = torch.minimum(min_dist, ((points - centres[-1].unsqueeze(1)) ** 2).sum(-1))
        centres.append(points[torch.arange(batch), min_dist.masked_fill(~active, float("-inf")).argmax(dim=1)])
    return torch.stack(centres, dim=1)  # [B, k, D]


def _kmeanspp_init(points, active, k, uniforms):
    """k-means++ seeds, drawn by inverse CDF from `uniforms` [k] shared by every utterance: an utterance gets
    the same seeds whatever else is in its batch (a batch-wide sampler would hand it other draws)."""
    batch, n, _ = points.shape
    # rows without any active point draw from all points, so that sampling is always defined
    allowed = (active | ~active.any(dim=1, keepdim=True)).to(points.dtype)

    def pick(weights, u):
        cdf = (weights + 1e-12 * allowed).cumsum(dim=1)
        return torch.searchsorted(cdf, u * cdf[:, -1:], right=True).squeeze(1).clamp(max=n - 1)

    centres = [points[torch.arange(batch), pick(allowed, uniforms[0])]]
    min_dist = torch.full((batch, n), float("inf"), device=points.device)
    for j in range(1, k):
        min_dist = torch.minimum(min_dist, ((points - centres[-1].unsqueeze(1)) ** 2).sum(-1))
        centres.append(points[torch.arange(batch), pick(min_dist * allowed, uniforms[j])])
    return torch.stack(centres, dim=1)


def batched_kmeans(points, weights, k, iterations=20, n_init=1, seed=0):
    """Cluster points [B, N, D] with per-point weights [B, N] (0 = ignore) into k clusters, keeping the best
    of `n_init` restarts per utterance.

    Returns (labels [B, N] in 0..k-1 for every point, inactive ones included, by nearest centre;
    centres [B, k, D]).
    """
    batch = points.shape[0]
    active = weights > 0
    w = weights.clamp(min=0).unsqueeze(-1)  # [B, N, 1]
    inits = [_farthest_point_init(points, active, w, k)]
    generator = torch.Generator().manual_seed(seeding.torch_seed("kmeans", seed))
    uniforms = torch.rand(max(int(n_init) - 1, 0), k, 1, generator=generator, dtype=points.dtype).to(points.device)
    inits += [_kmeanspp_init(points, active, k, u.unsqueeze(1).repeat(1, batch, 1)) for u in uniforms]
    centres = torch.cat(inits)  # [n_init * B, k, D], restart-major
    pts, ww = points.repeat(len(inits), 1, 1), w.repeat(len(inits), 1, 1)
    for _ in range(iterations):
        labels = torch.cdist(pts, centres).argmin(dim=-1)  # [R*B, N]
        one_hot = torch.nn.functional.one_hot(labels, k).to(points.dtype) * ww  # [R*B, N, k]
        mass = one_hot.sum(1).unsqueeze(-1)  # [R*B, k, 1]
        updated = one_hot.transpose(1, 2) @ pts / mass.clamp(min=1e-8)
        centres = torch.where(mass > 0, updated, centres)  # an empty cluster keeps its centre
    dist = torch.cdist(pts, centres)
    best_dist, labels = dist.min(dim=-1)
    inertia = (best_dist.pow(2) * ww.squeeze(-1)).sum(dim=1).view(len(inits), batch)
    best = inertia.argmin(dim=0)  # [B]
    rows = best * batch + torch.arange(batch, device=points.device)
    return labels[rows], centres[rows]


def whiten(points, weights, eps=1e-6):
    """points [B, N, D] -> points (P^T W P / sum W)^-1/2 [B, N, D], with W the weights [B, N]: the same points in
    coordinates where their weighted second moment is the identity. Deep clustering's whitened loss (DC-W) sees
    the embeddings only through their span, so their raw geometry is arbitrary up to an invertible map; k-means
    on whitened points does not depend on that map (local/benchmarks/dpcl_diagnostics.py)."""
    w = weights.clamp(min=0).unsqueeze(-1)
    moment = points.transpose(1, 2) @ (points * w) / w.sum(dim=1, keepdim=True).clamp(min=1e-12)
    values, vectors = torch.linalg.eigh(moment)
    values = values.clamp(min=eps * values[..., -1:].clamp(min=1e-30))
    return points @ (vectors * values.rsqrt().unsqueeze(-2)) @ vectors.transpose(1, 2)

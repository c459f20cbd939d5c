"""Batched, weighted k-means in torch, for deep-clustering inference.

All utterances of a batch are clustered at once on their embeddings (one matrix product per
iteration), instead of one scikit-learn call per utterance: evaluation of a test set is bounded by
the network, not by the clustering. Deterministic: farthest-point initialisation (the first centre is
the active point with the largest weighted projection on the mean embedding, then repeatedly the
active point farthest from the chosen centres) and a fixed number of Lloyd iterations.
"""
import torch


def batched_kmeans(points, weights, k, iterations=20):
    """Cluster points [B, N, D] with per-point weights [B, N] (0 = ignore) into k clusters.

    Returns (labels [B, N] in 0..k-1 for every point, inactive ones included, by nearest centre;
    centres [B, k, D]).
    """
    batch, n, _ = points.shape
    active = weights > 0
    w = weights.clamp(min=0).unsqueeze(-1)  # [B, N, 1]
    # Farthest-point initialisation among active points.
    mean = (points * w).sum(1, keepdim=True) / w.sum(1, keepdim=True).clamp(min=1e-8)
    score = (points * mean).sum(-1).masked_fill(~active, float("-inf"))
    first = score.argmax(dim=1)
    centres = [points[torch.arange(batch), first]]
    min_dist = torch.full((batch, n), float("inf"), device=points.device)
    for _ in range(1, k):
        dist = ((points - centres[-1].unsqueeze(1)) ** 2).sum(-1)
        min_dist = torch.minimum(min_dist, dist)
        nxt = min_dist.masked_fill(~active, float("-inf")).argmax(dim=1)
        centres.append(points[torch.arange(batch), nxt])
    centres = torch.stack(centres, dim=1)  # [B, k, D]
    for _ in range(iterations):
        labels = torch.cdist(points, centres).argmin(dim=-1)  # [B, N]
        one_hot = torch.nn.functional.one_hot(labels, k).to(points.dtype) * w  # [B, N, k]
        mass = one_hot.sum(1).unsqueeze(-1)  # [B, k, 1]
        updated = one_hot.transpose(1, 2) @ points / mass.clamp(min=1e-8)
        centres = torch.where(mass > 0, updated, centres)  # an empty cluster keeps its centre
    labels = torch.cdist(points, centres).argmin(dim=-1)
    return labels, centres

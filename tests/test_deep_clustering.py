import pytest
import torch

from local.common.config import load_config
from local.models.kmeans import batched_kmeans
from local.training.losses import deep_clustering_loss, make_loss
from local.models import build_model


def naive_dc_loss(embedding, target, weights, n_src):
    """||W^1/2 (V V^T - Y Y^T) W^1/2||_F^2 / (sum W)^2 with the full N x N affinity matrices."""
    losses = []
    for v, t, w in zip(embedding, target, weights):
        y = torch.nn.functional.one_hot(t, n_src).to(v.dtype)
        a = v @ v.T - y @ y.T
        a = a * w[:, None].sqrt() * w[None, :].sqrt()
        losses.append(a.pow(2).sum() / w.sum() ** 2)
    return torch.stack(losses).mean()


def test_low_rank_loss_equals_the_naive_affinity_form():
    torch.manual_seed(0)
    v = torch.nn.functional.normalize(torch.randn(3, 300, 20, dtype=torch.float64), dim=-1)
    t = torch.randint(0, 3, (3, 300))
    w = (torch.rand(3, 300) > 0.3).to(torch.float64)
    fast, naive = deep_clustering_loss(v, t, w, 3), naive_dc_loss(v, t, w, 3)
    assert fast.item() == pytest.approx(naive.item(), rel=1e-4)


def test_perfect_embedding_gives_zero_loss():
    t = torch.randint(0, 2, (2, 500))
    v = torch.nn.functional.one_hot(t, 2).float() @ torch.tensor([[1.0, 0, 0], [0, 1.0, 0]])
    assert deep_clustering_loss(v, t, torch.ones(2, 500), 2).item() == pytest.approx(0.0, abs=1e-6)
    # a source that dominates no bin does not break the loss (n_src comes from the model, not the data)
    assert deep_clustering_loss(v, torch.zeros_like(t), torch.ones(2, 500), 3).item() > 0


def test_inactive_bins_are_ignored():
    torch.manual_seed(1)
    v = torch.nn.functional.normalize(torch.randn(1, 200, 10), dim=-1)
    t = torch.randint(0, 2, (1, 200))
    w = torch.ones(1, 200)
    w[:, 150:] = 0
    base = deep_clustering_loss(v, t, w, 2)
    v2, t2 = v.clone(), t.clone()
    v2[:, 150:] = torch.randn(1, 50, 10)
    t2[:, 150:] = 1 - t2[:, 150:]
    assert deep_clustering_loss(v2, t2, w, 2).item() == pytest.approx(base.item(), rel=1e-6)
    assert base.item() == pytest.approx(deep_clustering_loss(v[:, :150], t[:, :150], w[:, :150], 2).item(), rel=1e-6)


def test_kmeans_recovers_well_separated_clusters():
    torch.manual_seed(2)
    centres = torch.nn.functional.normalize(torch.randn(2, 3, 16), dim=-1) * 5
    truth = torch.randint(0, 3, (2, 600))
    points = centres[torch.arange(2)[:, None], truth] + 0.1 * torch.randn(2, 600, 16)
    weights = torch.ones(2, 600)
    weights[:, :50] = 0  # inactive points still get the nearest cluster
    labels, _ = batched_kmeans(points, weights, 3)
    for b in range(2):
        # the same partition up to a renaming of the clusters
        mapping = {int(truth[b, i]): int(labels[b, i]) for i in range(600)}
        assert len(set(mapping.values())) == 3
        assert all(mapping[int(truth[b, i])] == int(labels[b, i]) for i in range(600))


def test_dpcl_masks_partition_the_bins_and_separation_sums_to_the_mixture():
    cfg = load_config("dpcl_dprnn_2spk_small", ["model.hid_size=16", "model.n_repeats=1", "model.chunk_size=20"])
    model = build_model(cfg).eval()
    mixture = torch.randn(2, 4000)
    with torch.no_grad():
        masks = model.masker(model.stft(mixture))
        estimates = model(mixture)
    assert masks.shape[1] == 2
    assert set(masks.unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(masks.sum(dim=1), torch.ones_like(masks[:, 0]))
    assert estimates.shape == (2, 2, 4000)
    torch.testing.assert_close(estimates.sum(dim=1), mixture, atol=1e-4, rtol=0)


def test_chimera_objective_trains_both_heads():
    cfg = load_config("chimera_dprnn_2spk_small", ["model.hid_size=16", "model.n_repeats=1", "model.chunk_size=20"])
    model, loss = build_model(cfg), make_loss(cfg)
    sources = torch.randn(2, 2, 4000) * 0.1
    value = loss(model, sources.sum(1), sources)
    value.backward()
    head = model.masker.dprnn.mask_net  # the output layer feeds both the embeddings and the MI masks
    assert torch.isfinite(value) and head.weight.grad.abs().sum() > 0
    with torch.no_grad():
        masks = model.eval().masker(model.stft(sources.sum(1)))
    torch.testing.assert_close(masks.sum(dim=1), torch.ones_like(masks[:, 0]))  # softmax MI masks

import itertools

import numpy as np
import pytest
import torch

from local.common.config import load_config
from local.common.errors import RecipeError
from local.models import build_model
from local.models.kmeans import batched_kmeans, whiten
from local.models.stft_masker import log_magnitude_features
from local.training.losses import deep_clustering_loss, make_loss, truncated_psa_target, whitened_deep_clustering_loss


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


def test_whitened_points_have_identity_moment_and_kmeans_on_them_ignores_an_invertible_map():
    """whiten: P (P^T W P / sum W)^-1/2, so the weighted second moment is the identity (checked against the
    formula); DC-W sees embeddings V and V R alike, and k-means on whitened points gives one partition for both.
    Two clusters split along a direction of small spread, with a wide uniform spread across it: raw k-means cuts
    the wide direction, whitened k-means finds the clusters."""
    torch.manual_seed(4)
    n = 800
    truth = torch.arange(n) % 2
    points = torch.stack([(2.0 * truth - 1) * 0.3 + 0.03 * torch.randn(n), 6 * (torch.rand(n) - 0.5)],
                         dim=-1).double()[None]
    weights = torch.rand(1, n, dtype=torch.double) + 0.5
    white = whiten(points, weights)
    moment = (white[0].T * weights[0]) @ white[0] / weights.sum()
    torch.testing.assert_close(moment, torch.eye(2, dtype=torch.double))
    raw_labels, _ = batched_kmeans(points, weights, 2, n_init=3)
    labels, _ = batched_kmeans(white, weights, 2, n_init=3)
    agreement = lambda lab: max((lab[0] == truth).double().mean(), (lab[0] != truth).double().mean())  # noqa: E731
    assert agreement(labels) == 1.0 and agreement(raw_labels) < 0.8
    mixing = torch.tensor([[2.0, 0.5], [0.3, -1.0]], dtype=torch.double)
    mapped, _ = batched_kmeans(whiten(points @ mixing, weights), weights, 2, n_init=3)
    assert agreement(mapped) == 1.0


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


def naive_whitened_dc_loss(embedding, target, weights, n_src):
    """Wang, Le Roux and Hershey 2018, Eq. 7 in its affinity form: the squared Frobenius distance between the
    whitened affinities V (V^T V)^-1 V^T and Y (Y^T Y)^-1 Y^T (N x N), with V and Y weighted by W^1/2."""
    losses = []
    for v, t, w in zip(embedding.numpy(), target.numpy(), weights.numpy()):
        y = np.eye(n_src)[t] * np.sqrt(w)[:, None]
        v = v * np.sqrt(w)[:, None]
        a = v @ np.linalg.inv(v.T @ v) @ v.T
        b = y @ np.linalg.inv(y.T @ y) @ y.T
        losses.append(((a - b) ** 2).sum())
    return float(np.mean(losses))


def test_whitened_dc_loss_equals_the_papers_equation():
    torch.manual_seed(3)
    v = torch.nn.functional.normalize(torch.randn(3, 400, 8, dtype=torch.float64), dim=-1)
    t = torch.randint(0, 3, (3, 400))
    w = (torch.rand(3, 400) > 0.2).to(torch.float64)
    got = whitened_deep_clustering_loss(v, t, w, 3, eps=1e-12).item()
    assert got == pytest.approx(naive_whitened_dc_loss(v, t, w, 3), rel=1e-5)
    # ideal embeddings (the one-hot partition itself, D = C) reach the minimum D - C = 0
    ideal = torch.nn.functional.one_hot(t, 3).to(torch.float64)
    assert (whitened_deep_clustering_loss(ideal, t, torch.ones_like(w), 3, eps=1e-12).item()
            == pytest.approx(0, abs=1e-6))


def test_whitened_dc_floor_asks_for_clusters_only_with_one_dimension_per_source():
    """Why DC-W embeddings need not cluster (docs/speakers.md, diagnostic g): its floor D - C is reached as soon as
    the indicators lie in the embeddings' span, so with D > C a direction the loss never sees may spread a
    speaker's bins wider than the gap between speakers, and k-means cuts that direction. With D = C the floor is 0
    and is reached only by V = Y A (A invertible): every bin of a speaker has the same embedding."""
    torch.manual_seed(5)
    n = 600
    t = torch.randint(0, 2, (1, n))
    w = torch.ones(1, n, dtype=torch.float64)
    y = torch.nn.functional.one_hot(t, 2).to(torch.float64)
    agreement = lambda lab: max((lab[0] == t[0]).double().mean(), (lab[0] != t[0]).double().mean())  # noqa: E731
    # D = 3: two clustered dimensions and a wide free one; the loss is at its floor 3 - 2 = 1, k-means fails
    spread = torch.cat([y, 10 * torch.randn(1, n, 1, dtype=torch.float64)], dim=-1)
    assert whitened_deep_clustering_loss(spread, t, w, 2, eps=1e-12).item() == pytest.approx(1.0, abs=1e-6)
    assert naive_whitened_dc_loss(spread, t, w, 2) == pytest.approx(1.0, abs=1e-6)
    labels, _ = batched_kmeans(spread, w, 2, n_init=3)
    assert agreement(labels) < 0.7
    # D = C = 2: the floor 0 holds for any invertible map of the indicators (clusters), and k-means is exact there
    mapped = y @ torch.tensor([[0.8, 0.6], [-0.2, 1.0]], dtype=torch.float64)
    assert whitened_deep_clustering_loss(mapped, t, w, 2, eps=1e-12).item() == pytest.approx(0.0, abs=1e-6)
    labels, _ = batched_kmeans(mapped, w, 2, n_init=3)
    assert agreement(labels) == 1.0
    # ... and a 2-D embedding whose speakers spread along a shared direction is off the floor
    smeared = mapped + 0.5 * torch.randn(1, n, 1, dtype=torch.float64)  # the same shift on both axes
    assert whitened_deep_clustering_loss(smeared, t, w, 2, eps=1e-12).item() > 0.1
    assert load_config("dpcl_dprnn_2spk_small_d2")["model"]["embedding_dim"] == 2  # the config built on it


def test_truncated_psa_target_follows_its_definition():
    torch.manual_seed(4)
    mix, src = torch.randn(2, 2 * 9, 6), torch.randn(2, 3, 2 * 9, 6)
    xc = torch.complex(mix[:, :9], mix[:, 9:]).unsqueeze(1)
    sc = torch.complex(src[:, :, :9], src[:, :, 9:])
    expected = torch.minimum((sc.abs() * torch.cos(sc.angle() - xc.angle())).clamp(min=0), xc.abs())
    torch.testing.assert_close(truncated_psa_target(mix, src), expected, atol=1e-5, rtol=1e-5)


def test_chimera_configs_are_chimera_plus_plus_as_published():
    for tag in ("chimera_dprnn_2spk", "chimera_dprnn_2spk_small"):
        loss = load_config(tag)["loss"]
        assert (loss["dc"], loss["mi"], loss["alpha"]) == ("whitened", "tpsa", 0.975), tag


def test_kmeans_restarts_never_do_worse_than_one_start():
    """With restarts, each utterance keeps the lowest weighted inertia, so it is at most the single start's."""
    torch.manual_seed(5)
    centres = torch.randn(4, 3, 6) * 2
    points = centres[torch.arange(4)[:, None], torch.randint(0, 3, (4, 500))] + torch.randn(4, 500, 6)
    points[:, :5] += 30  # outliers that a farthest-point start picks as centres
    weights = torch.ones(4, 500)

    def inertia(labels, centres_):
        return ((points - centres_.gather(1, labels[..., None].expand(-1, -1, 6))) ** 2).sum(-1).sum(-1)

    one = inertia(*batched_kmeans(points, weights, 3, n_init=1))
    many = inertia(*batched_kmeans(points, weights, 3, n_init=10))
    assert torch.all(many <= one + 1e-4) and torch.any(many < one - 1.0)
    again = batched_kmeans(points, weights, 3, n_init=10)[0]
    assert torch.equal(again, batched_kmeans(points, weights, 3, n_init=10)[0])  # seeded
    # An utterance's partition does not depend on the rest of its batch (evaluation batches vary, pages
    # recompute the example mixtures alone). Restarts that reach one partition with its clusters in another
    # order tie in inertia up to rounding, so the labels are compared up to a permutation.
    def same_partition(a, b):
        return any(torch.equal(torch.tensor(p)[a], b) for p in itertools.permutations(range(4)))

    # Uniform points have many local minima, so the k-means++ draws decide (a batch-wide sampler failed 4 of 6).
    torch.manual_seed(1)
    points, weights = torch.rand(6, 300, 2), torch.ones(6, 300)
    batch = batched_kmeans(points, weights, 4, n_init=3, iterations=5)[0]
    reordered = batched_kmeans(points.flip(0), weights, 4, n_init=3, iterations=5)[0]
    for b in range(6):
        assert same_partition(batched_kmeans(points[b : b + 1], weights[:1], 4, n_init=3, iterations=5)[0][0], batch[b])
        assert same_partition(reordered[5 - b], batch[b])


def test_kmeanspp_seeds_follow_the_squared_distance_law():
    """Inverse-CDF seeding: the second centre of k-means++ is drawn with probability proportional to the squared
    distance to the first (Arthur and Vassilvitskii 2007); checked by frequency over seeds against that formula."""
    from local.models.kmeans import _kmeanspp_init

    points = torch.tensor([[[0.0], [1.0], [2.0], [4.0]]]).repeat(4000, 1, 1)
    active = torch.ones(4000, 4, dtype=torch.bool)
    active[:, 0] = True
    u = torch.rand(2, 4000, 1, generator=torch.Generator().manual_seed(0))
    u[0] = 0.0  # first centre: the first point (value 0)
    second = _kmeanspp_init(points, active, 2, u)[:, 1, 0]
    expected = torch.tensor([0.0, 1.0, 4.0, 16.0]) / 21.0
    observed = torch.stack([(second == v).float().mean() for v in (0.0, 1.0, 2.0, 4.0)])
    assert torch.allclose(observed, expected, atol=0.02), observed


def test_oracle_embeddings_through_kmeans_masks_and_istft_reproduce_the_ibm(tiny_data):
    """Diagnostic (a) of DPCL-DPRNN: with the network's embeddings replaced by the ideal ones (one-hot labels of
    the dominant source of every bin), the model's own inference (VAD, k-means, binary masks, iSTFT) gives the
    ideal binary mask's estimates, per mixture; so the clustering and resynthesis path loses nothing."""
    from local.data.dataset import ViewDataset
    from local.data.sources import load_sources
    from local.data.view_csv import views_dir
    from local.evaluation.metrics import si_sdr
    from local.evaluation.oracle import OracleMasks
    from local.models.stft_masker import edge_padding

    data_dir, cfg = tiny_data
    dataset = ViewDataset(views_dir(data_dir, 2) / "test.csv", load_sources(data_dir)[1])
    model = build_model(load_config("dpcl_dprnn_2spk_small", ["model.hid_size=16", "model.n_repeats=1",
                                                              "model.chunk_size=20"])).eval()
    oracle = OracleMasks(n_filters=256, kernel_size=256, stride=64, sample_rate=8000)
    for index in range(len(dataset)):
        mixture, sources = dataset[index]
        left, right = edge_padding(mixture.shape[-1], 256, 64)
        source_tf = model.stft(sources)  # [n_src, 2F, frames], the padding separation uses
        dominant = source_tf[:, :129].pow(2).add(source_tf[:, 129:].pow(2)).argmax(dim=0)  # [F, frames]
        ideal = torch.nn.functional.one_hot(dominant, model.masker.embedding_dim).float()[None]
        model.masker.heads = lambda tf, ideal=ideal: {"embedding": ideal, "mi_masks": None}
        with torch.no_grad():
            estimates = model(mixture[None])[0].double().numpy()
        ibm = oracle.estimates(mixture, sources, ["ibm"])["ibm"].double().numpy()
        refs = sources.double().numpy()
        ours = max(si_sdr(refs, estimates).mean(), si_sdr(refs, estimates[::-1]).mean())  # k-means labels any order
        assert ours == pytest.approx(si_sdr(refs, ibm).mean(), abs=1e-3), index


def test_every_read_out_of_the_diagnostics_gives_the_ibm_on_ideal_embeddings(tiny_data):
    """local/benchmarks/dpcl_diagnostics.py on a model whose embeddings are the ideal ones (one-hot dominant source):
    k-means, oracle centroids, the oracle linear read-out and k-means on whitened embeddings all give the ideal
    binary mask's SI-SDRi, and the classic DC loss is 0 (a perfect partition) against a positive collapse value."""
    from local.benchmarks.dpcl_diagnostics import diagnose
    from local.data.dataset import ViewDataset
    from local.data.sources import load_sources
    from local.data.view_csv import views_dir

    data_dir, cfg = tiny_data
    dataset = ViewDataset(views_dir(data_dir, 2) / "test.csv", load_sources(data_dir)[1])
    model = build_model(load_config("dpcl_dprnn_2spk_small_w", ["model.hid_size=16", "model.n_repeats=1",
                                                                "model.chunk_size=20"])).eval()
    ideal = {}
    for index in range(len(dataset)):
        mixture, sources = dataset[index]
        source_tf = model.stft(sources)
        dominant = source_tf[:, :129].pow(2).add(source_tf[:, 129:].pow(2)).argmax(dim=0)
        ideal[round(float(model.stft(mixture[None]).sum()), 2)] = torch.nn.functional.one_hot(
            dominant, model.masker.embedding_dim).float()[None]
    model.masker.heads = lambda tf: {"embedding": ideal[round(float(tf.sum()), 2)], "mi_masks": None}
    result = diagnose(model, dataset, len(dataset), 40.0)
    assert result["n_mixtures"] == len(dataset) == len(ideal)
    for read_out in ("kmeans", "oracle_centroids", "oracle_linear", "whitened_kmeans"):
        assert result[read_out] == pytest.approx(result["ibm"], abs=2e-3), read_out
    assert result["dc_loss"] == pytest.approx(0.0, abs=1e-6) and result["collapse_loss"] > 0.1


def test_magnitude_bin_weights_are_the_mixture_magnitude_on_active_bins_and_enter_the_loss_as_w():
    """bin_weights('magnitude') = |X| on the bins within vad_db of the loudest, 0 elsewhere (written out here);
    the DC loss with those weights equals ||W^1/2 (V V^T - Y Y^T) W^1/2||_F^2 / (sum W)^2 built as N x N matrices."""
    from local.models.dpcl import bin_weights

    torch.manual_seed(0)
    magnitude = torch.rand(1, 5, 7) * torch.tensor([1.0, 1e-3, 1.0, 1e-5, 1.0, 1.0, 1.0])  # two quiet frames
    weights = bin_weights(magnitude, 40.0, "magnitude")
    expected = torch.where(magnitude >= magnitude.amax() * 10 ** (-40 / 20), magnitude, torch.zeros(()))
    assert torch.allclose(weights, expected)
    assert torch.equal(bin_weights(magnitude, 40.0, "vad"), (expected > 0).float())

    n = 35
    v = torch.nn.functional.normalize(torch.randn(1, n, 4), dim=-1)
    target = torch.randint(0, 2, (1, n))
    w = weights.reshape(1, n)
    y = torch.nn.functional.one_hot(target, 2).float()
    root = torch.diag(w[0].sqrt())
    dense = (root @ (v[0] @ v[0].T - y[0] @ y[0].T) @ root).pow(2).sum() / w.sum() ** 2
    assert float(deep_clustering_loss(v, target, w, 2)) == pytest.approx(float(dense), rel=1e-5)


def test_tanh_embeddings_are_unit_norm_tanh_of_the_network_output():
    model = build_model(load_config("dpcl_dprnn_2spk_small", ["model.hid_size=16", "model.n_repeats=1",
                                                              "model.chunk_size=20",
                                                              "model.embedding_activation=tanh"])).eval()
    mix_tf = model.stft(torch.randn(1, 4000) * 0.1)
    with torch.no_grad():
        raw = model.masker.dprnn(log_magnitude_features(mix_tf))
        embedding = model.masker.heads(mix_tf)["embedding"]
    dim = model.masker.embedding_dim
    raw = raw.view(1, -1, model.masker.n_freq, raw.shape[-1])[:, :dim].permute(0, 2, 3, 1)
    assert torch.allclose(embedding, torch.nn.functional.normalize(torch.tanh(raw), dim=-1), atol=1e-6)
    assert torch.allclose(embedding.norm(dim=-1), torch.ones(()), atol=1e-5)


def test_blstm_backbone_gives_unit_norm_tanh_embeddings_of_its_stack_and_survives_a_reload(tmp_path):
    """model.backbone blstm (Hershey et al. 2016's network): the embeddings are the unit-norm tanh of the residual
    BLSTM stack's linear output, per bin; the saved model rebuilds with the same backbone and the same output."""
    from local.models import load_model, model_package
    from local.models.lstm import ResidualBLSTMMasker
    cfg = load_config("dpcl_blstm_2spk_w", ["model.hid_size=16", "model.n_repeats=2"])
    model = build_model(cfg).eval()
    assert isinstance(model.masker.blstm, ResidualBLSTMMasker) and not hasattr(model.masker, "dprnn")
    mix_tf = model.stft(torch.randn(1, 4000) * 0.1)
    with torch.no_grad():
        raw = model.masker.blstm(mix_tf)[:, : model.masker.embedding_dim].permute(0, 2, 3, 1)
        embedding = model.masker.heads(mix_tf)["embedding"]
    assert embedding.shape == (1, model.masker.n_freq, mix_tf.shape[-1], 40)
    assert torch.allclose(embedding, torch.nn.functional.normalize(torch.tanh(raw), dim=-1), atol=1e-6)
    torch.save(model_package(model), tmp_path / "m.pth")
    again = load_model(tmp_path / "m.pth").eval()
    assert again.masker.backbone == "blstm"
    mixture = torch.randn(1, 4000) * 0.1
    with torch.no_grad():
        assert torch.allclose(again.masker.heads(again.stft(mixture))["embedding"],
                              model.masker.heads(model.stft(mixture))["embedding"], atol=1e-6)
    with pytest.raises(RecipeError, match="model.backbone must be dprnn or blstm"):
        build_model(load_config("dpcl_blstm_2spk_w", ["model.backbone=transformer"]))
    for bad in ("0", "-1", "abc"):  # one line naming the key, not a tensor-shape error from deep inside torch
        with pytest.raises(RecipeError, match="model.embedding_dim must be a positive integer"):
            build_model(load_config("dpcl_dprnn_2spk_small_d2", [f"model.embedding_dim={bad}"]))

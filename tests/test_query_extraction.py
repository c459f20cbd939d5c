"""Label-queried extraction (issue 23): the FiLM-conditioned extractor, its objective, its evaluation."""
import numpy as np
import pytest
import torch

from local.common.config import load_config
from local.common.errors import RecipeError
from local.models import build_model

LABELS = ["bird", "dog", "siren"]


def _model(**overrides):
    cfg = load_config("query_lstm_2src", ["model.hidden_size=16", "model.n_layers=2", "model.label_dim=4"])
    cfg["model"]["labels"] = LABELS
    cfg["model"].update(overrides)
    return build_model(cfg).eval()


def test_the_query_changes_the_output_once_the_conditioning_is_trained():
    """FiLM starts at zero (the untrained extractor's mask is the unconditioned masker's: every query, one masked
    sound; the default tagging gate has a row per label from the start); with conditioning weights, two labels give
    two outputs, and a query by name equals the query by index."""
    model = _model()
    mixture = torch.randn(2, 4000) * 0.1
    with torch.no_grad():
        first, second = model.masked_and_presence(mixture, [0, 0])[0], model.masked_and_presence(mixture, [1, 1])[0]
        torch.testing.assert_close(first, second)
        for film in model.masker.films:
            torch.nn.init.normal_(film.weight, std=0.5)
        first, second = model(mixture, torch.tensor([0, 0])), model(mixture, torch.tensor([1, 1]))
        assert first.shape == (2, 1, 4000) and (first - second).abs().max() > 1e-4
        torch.testing.assert_close(model(mixture, "dog"), second)
    with pytest.raises(ValueError, match="unknown query cat; this model knows bird, dog, siren"):
        model(mixture, "cat")


def test_a_shared_trunk_runs_once_per_mixture_and_gives_the_outputs_of_one_pass_per_item():
    """film_layers 1 of 3: the first two layers are unconditioned; a batch holding several queries of each of two
    mixtures gives, per item, the output of that item alone (the trunk computed once per mixture and shared), and
    the trunk sees only the distinct mixtures. film_layers outside 0..n_layers is refused by name."""
    model = _model(n_layers=3, film_layers=1)
    assert model.masker.n_shared == 2 and len(model.masker.films) == 1
    for film in model.masker.films:
        torch.nn.init.normal_(film.weight, std=0.5)
    mixtures = torch.randn(2, 4000) * 0.1
    batch, query = mixtures[torch.tensor([0, 0, 0, 1, 1])], torch.tensor([0, 1, 2, 2, 0])
    seen = []
    handle = model.masker.rnns[0].register_forward_hook(lambda module, args, out: seen.append(args[0].shape[0]))
    with torch.no_grad():
        together = model(batch, query)
        alone = torch.cat([model(batch[i : i + 1], query[i : i + 1]) for i in range(5)])
    handle.remove()
    assert seen[0] == 2  # two distinct mixtures through the trunk, not five items
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-4)
    assert (together[0] - together[1]).abs().max() > 1e-4  # two queries of one mixture, two outputs

    with pytest.raises(RecipeError, match=r"model.film_layers must be an integer between 0 and .* \(2\), got 3"):
        _model(film_layers=3)
    with pytest.raises(RecipeError, match=r"model.film_layers must be an integer .* got 'abc'"):
        _model(film_layers="abc")


def test_conditioning_at_the_head_shares_the_whole_stack_and_still_answers_each_query():
    """film_layers 0: every BLSTM layer is run once per distinct mixture, the query acts only in the mask head
    (FiLM on the stack's output, a hidden layer, the mask). Untrained (FiLM at zero) every query gives one output;
    with FiLM weights, two queries of one mixture give two outputs, each the output of that item alone, and the
    head's FiLM is the only conditioning (no FiLM inside the stack)."""
    model = _model(n_layers=2, film_layers=0)
    assert model.masker.n_shared == 2 and len(model.masker.films) == 1 and model.masker.head is not None
    mixtures = torch.randn(2, 4000) * 0.1
    batch, query = mixtures[torch.tensor([0, 0, 0, 1, 1])], torch.tensor([0, 1, 2, 2, 0])
    with torch.no_grad():
        untrained = model.masked_and_presence(batch, query)[0]  # the masked sound (the tagger has a row per label)
        torch.testing.assert_close(untrained[0], untrained[1])
        torch.nn.init.normal_(model.masker.films[0].weight, std=0.5)
        seen = []
        handles = [rnn.register_forward_hook(lambda module, args, out: seen.append(args[0].shape[0]))
                   for rnn in model.masker.rnns]
        together = model(batch, query)
        for handle in handles:
            handle.remove()
        alone = torch.cat([model(batch[i : i + 1], query[i : i + 1]) for i in range(5)])
    assert seen == [2, 2]  # both layers see the two distinct mixtures, not the five items
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-4)
    assert (together[0] - together[1]).abs().max() > 1e-4 and (together[1] - together[2]).abs().max() > 1e-4
    # by hand: the mask of item 0 from the stack's features, the FiLM of its label, the head
    masker = model.masker
    with torch.no_grad():
        tf_rep = model.encoder(torch.nn.functional.pad(batch[:1], model_padding(model, 4000)).unsqueeze(1))
        x = masker.features(tf_rep)
        gamma, beta = masker.films[0](model.embedding(query[:1])).chunk(2, dim=-1)
        hidden = torch.relu(masker.head["hidden"]((1 + gamma) * masker.head["norm"](x) + beta))
        mask = torch.sigmoid(masker.output(hidden)).transpose(1, 2).unsqueeze(1)
        torch.testing.assert_close(masker.conditioned(x, model.embedding(query[:1])), mask)


def model_padding(model, length):
    from local.models.stft_masker import edge_padding

    return edge_padding(length, model.stft_args["kernel_size"], model.stft_args["stride"])


def test_the_wrong_sound_is_told_from_a_poor_one_by_the_other_sources_si_sdr():
    """best_other_si_sdr: the best SI-SDR of an output against the sources other than the queried one, against
    SI-SDR written out here (alpha = <y, s> / <s, s>, 10 log10 |alpha s|^2 / |alpha s - y|^2); an output that is
    mostly source 1 scores high against it and is the wrong sound for a query of source 0."""
    from local.evaluation.query_eval import best_other_si_sdr

    rng = np.random.default_rng(3)
    sources = rng.standard_normal((3, 4000))
    estimate = sources[1] + 0.3 * sources[0] + 0.1 * rng.standard_normal(4000)

    def by_hand(y, s):
        y, s = y - y.mean(), s - s.mean()
        alpha = (y @ s) / (s @ s)
        return 10 * np.log10(np.sum((alpha * s) ** 2) / np.sum((alpha * s - y) ** 2))

    expected = max(by_hand(estimate, sources[1]), by_hand(estimate, sources[2]))
    assert best_other_si_sdr(estimate, sources, 0) == pytest.approx(expected, abs=1e-3)
    assert expected == pytest.approx(by_hand(estimate, sources[1])) and expected > by_hand(estimate, sources[0])
    assert best_other_si_sdr(estimate, sources[:1], 0) == float("-inf")


def test_training_batches_keep_the_queries_of_a_mixture_together(monkeypatch):
    """group=s permutes mixtures, not items: each run of s slots stays whole and in order, seeded by epoch;
    group=1 is the item permutation of before."""
    from local.training import resumable
    from local.training.resumable import EpochBatchSampler

    monkeypatch.setattr(resumable, "rank_and_world_size", lambda: (0, 1))
    grouped, plain = EpochBatchSampler(24, 6, seed=2, group=3), EpochBatchSampler(24, 6, seed=2)
    order = grouped.order(1).tolist()
    runs = [order[i : i + 3] for i in range(0, 24, 3)]
    assert all(run == list(range(run[0], run[0] + 3)) and run[0] % 3 == 0 for run in runs)
    assert sorted(order) == list(range(24)) and order != grouped.order(2).tolist()
    expected = torch.randperm(8, generator=torch.Generator().manual_seed(
        resumable.seeding.torch_seed("batch_order", 2, 1))).tolist()
    assert [run[0] // 3 for run in runs] == expected
    assert plain.order(1).tolist() == torch.randperm(24, generator=torch.Generator().manual_seed(
        resumable.seeding.torch_seed("batch_order", 2, 1))).tolist()
    with pytest.raises(ValueError, match="25 items do not make runs of 3"):
        EpochBatchSampler(25, 6, group=3)


def test_the_objective_is_si_sdr_on_positives_and_the_level_on_negatives():
    """Against formulas written here: item 0 positive (negative SI-SDR with the optimal scaling of the reference),
    item 1 negative (10 log10 of the output's energy over the mixture's plus MixIT's tau for the -30 dB floor),
    weighted, averaged over the batch; an output 100 dB below the mixture costs the floor, -30 dB, not -100."""
    from local.training.losses import QueryExtractionLoss

    rng = np.random.default_rng(0)
    mixture, reference, estimate = (torch.tensor(rng.standard_normal((2, 800)), dtype=torch.float32)
                                    for _ in range(3))
    reference[1] = 0
    s, y = reference[0].double() - reference[0].double().mean(), estimate[0].double() - estimate[0].double().mean()
    target = (y @ s) / (s @ s) * s
    si_sdr = 10 * torch.log10(target.pow(2).sum() / (y - target).pow(2).sum())
    level = 10 * torch.log10(estimate[1].double().pow(2).sum() / mixture[1].double().pow(2).sum() + 1e-3)
    loss = QueryExtractionLoss(negative_weight=0.5, negative_floor_db=-30).from_estimates(estimate, mixture, reference)
    assert float(loss) == pytest.approx(float((-si_sdr + 0.5 * level) / 2), abs=1e-4)
    quiet = QueryExtractionLoss(negative_floor_db=-30).from_estimates(mixture[1:] * 1e-5, mixture[1:], reference[1:])
    assert float(quiet) == pytest.approx(-30.0, abs=0.01)
    loud = QueryExtractionLoss(negative_floor_db=-30).from_estimates(mixture[1:] * 0.1, mixture[1:], reference[1:])
    assert float(loud) == pytest.approx(10 * np.log10(0.01 + 1e-3), abs=1e-3)


def test_the_presence_gate_scales_the_output_and_asks_silence_of_the_gate_not_the_mask():
    """model.presence_gate: the output is the masked sound times sigmoid(gate logit). The objective, against the
    formula written here: -SI-SDR of the masked sound on the positive item, on the negative item the level of
    sigmoid(l) x the masked sound (+ tau), and the cross-entropy of the gate, -log s(l) for the positive and
    -log(1 - s(l)) for the negative (and with missed_weight, -10 log10(s(l)^2 + tau) on the positive); a batch
    of negatives only leaves the mask layer without a gradient (silence is asked of the gate) while the gate gets
    one."""
    from local.training.losses import QueryExtractionLoss

    torch.manual_seed(0)
    model = _model(n_layers=2, film_layers=0, presence_gate=True, presence_head="conditioned")
    torch.nn.init.normal_(model.masker.gate.weight, std=0.5)
    mixture = torch.randn(2, 4000) * 0.1
    masked, logit = model.masked_and_presence(mixture, [0, 1])
    with torch.no_grad():
        torch.testing.assert_close(model(mixture, [0, 1]), masked * torch.sigmoid(logit)[:, None, None])
    reference = torch.zeros(2, 4000)
    reference[0] = masked[0, 0].detach() + 0.5 * masked[0, 0].detach().std() * torch.randn(4000)  # about +6 dB
    s = reference[0].double() - reference[0].double().mean()
    y = masked[0, 0].detach().double() - masked[0, 0].detach().double().mean()
    target = (y @ s) / (s @ s) * s
    si_sdr = 10 * torch.log10(target.pow(2).sum() / (y - target).pow(2).sum())
    g = torch.sigmoid(logit.detach().double())
    level = 10 * torch.log10(g[1] ** 2 * masked[1, 0].detach().double().pow(2).sum()
                             / mixture[1].double().pow(2).sum() + 1e-3)
    cross_entropy = -torch.log(g[0]) - torch.log(1 - g[1])
    objective = QueryExtractionLoss(negative_weight=0.5, presence_weight=2.0)
    loss = objective.from_estimates(masked[:, 0], mixture, reference, logit)
    assert float(loss.detach()) == pytest.approx(float((-si_sdr + 0.5 * level + 2.0 * cross_entropy) / 2), abs=1e-4)
    # loss.missed_weight: the level term mirrored onto the positive item, -10 log10(g^2 + tau)
    deficit = -10 * torch.log10(g[0] ** 2 + 1e-3)
    mirrored = QueryExtractionLoss(negative_weight=0.5, presence_weight=2.0, missed_weight=3.0)
    assert float(mirrored.from_estimates(masked[:, 0], mixture, reference, logit).detach()) == pytest.approx(
        float((-si_sdr + 0.5 * level + 2.0 * cross_entropy + 3.0 * deficit) / 2), abs=1e-4)
    model.zero_grad()
    objective(model, (mixture[1:], torch.tensor([1])), reference[1:]).backward()
    grad = model.masker.output.weight.grad
    assert grad is None or float(grad.abs().sum()) == 0.0
    with pytest.raises(RecipeError, match="model.presence_gate must be true or false, got 'yes'"):
        _model(presence_gate="yes")
    assert float(model.masker.gate.weight.grad.abs().sum()) > 0.0


def test_the_presence_gate_pools_the_conditioned_features_by_mean_max_or_both(tmp_path):
    """model.presence_pool: the gate's logit is w . pool(features) + b with pool the mean over frames, the maximum,
    or their sum (PANNs), written out here on the features the mask is read from; a sound present in one frame
    moves the max-pooled gate as much as a sound in every frame, the mean-pooled one by 1/frames of it. An unknown
    pooling is refused by name; a saved package keeps its pooling."""
    from local.models import load_model, model_package

    torch.manual_seed(0)
    features, condition = torch.randn(3, 50, 16), torch.randn(3, 4)
    for pool, written in (("mean", lambda x: x.mean(1)), ("max", lambda x: x.max(1).values),
                          ("mean+max", lambda x: x.mean(1) + x.max(1).values)):
        model = _model(n_layers=2, film_layers=0, presence_gate=True, presence_pool=pool, presence_head="conditioned")
        torch.nn.init.normal_(model.masker.gate.weight, std=0.5)
        with torch.no_grad():
            gamma, beta = model.masker.films[0](condition).unsqueeze(1).chunk(2, dim=-1)
            hidden = torch.relu(model.masker.head["hidden"]((1 + gamma) * model.masker.head["norm"](features) + beta))
            expected = written(hidden) @ model.masker.gate.weight[0] + model.masker.gate.bias[0]
            _, logit = model.masker.conditioned_with_presence(features, condition)
        torch.testing.assert_close(logit, expected)
        torch.save(model_package(model), tmp_path / "model.pth")
        assert load_model(tmp_path / "model.pth").masker.presence_pool == pool
    one_frame, every_frame = torch.zeros(1, 50, 16), torch.ones(1, 50, 16)
    one_frame[0, 7] = 1.0
    max_pooled = _model(presence_gate=True, presence_pool="max", presence_head="conditioned").masker
    torch.testing.assert_close(max_pooled.pooled(one_frame), max_pooled.pooled(every_frame))
    mean_pooled = _model(presence_gate=True, presence_pool="mean", presence_head="conditioned").masker
    torch.testing.assert_close(mean_pooled.pooled(one_frame), mean_pooled.pooled(every_frame) / 50)
    with pytest.raises(RecipeError, match="model.presence_pool must be one of mean, max, mean\\+max, got 'sum'"):
        _model(presence_gate=True, presence_pool="sum")


def test_a_tagging_gate_reads_every_category_of_the_mixture_from_the_shared_stack(tmp_path, tiny_data):
    """model.presence_head tagger: the gate's logit is row q of a linear tagger on the max-pooled trunk features,
    w_q . max_t(features) + b_q, written out here; the objective's cross-entropy covers every category against the
    mixture's multi-hot labels, sum_c -[p_c log s(l_c) + (1 - p_c) log(1 - s(l_c))], counted once per mixture
    (here 2 items share the first mixture, 1 the second), computed by hand in float64; the query items carry
    that multi-hot vector, the same for every slot of a mixture. The tagger needs label queries and the gate;
    a saved package keeps it."""
    import pandas as pd

    from local.data.dataset import ViewDataset
    from local.data.queries import QueryDataset
    from local.data.sources import load_sources
    from local.data.view_csv import views_dir
    from local.models import load_model, model_package
    from local.models.stft_masker import edge_padding
    from local.training.losses import QueryExtractionLoss

    torch.manual_seed(0)
    model = _model(n_layers=2, film_layers=0, presence_gate=True, presence_pool="max", presence_head="tagger")
    torch.nn.init.normal_(model.masker.gate.weight, std=0.5)
    assert model.masker.gate.weight.shape == (len(LABELS), 16)
    first, second = torch.randn(4000) * 0.1, torch.randn(4000) * 0.1
    mixture, query = torch.stack([first, first, second]), torch.tensor([2, 0, 1])
    with torch.no_grad():
        masked, logit, tags = model.masked_and_presence(mixture, query, return_tags=True)
        left, right = edge_padding(4000, 256, 64)
        features = model.masker.features(model.encoder(torch.nn.functional.pad(mixture, (left, right)).unsqueeze(1)))
        written = features.max(dim=1).values @ model.masker.gate.weight.T + model.masker.gate.bias
    torch.testing.assert_close(tags, written, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logit, written[torch.arange(3), query], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model(mixture, query), masked * torch.sigmoid(logit)[:, None, None])
    present = torch.tensor([[1.0, 0.0, 1.0], [1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    reference = torch.zeros(3, 4000)  # all negative: only the level term and the tagging term remain
    logits, p = tags.double(), present.double()
    per_category = -(p * torch.log(torch.sigmoid(logits)) + (1 - p) * torch.log(1 - torch.sigmoid(logits)))
    tagging = per_category[0].sum() / 2 + per_category[1].sum() / 2 + per_category[2].sum()
    g = torch.sigmoid(logit.double())
    level = sum(10 * torch.log10(g[i] ** 2 * masked[i, 0].double().pow(2).sum() / mixture[i].double().pow(2).sum()
                                 + 1e-3) for i in range(3))
    objective = QueryExtractionLoss(negative_weight=0.5, presence_weight=2.0)
    loss = objective.from_estimates(masked[:, 0], mixture, reference, logit, tags, present)
    assert float(loss) == pytest.approx(float((0.5 * level + 2.0 * tagging) / 3), abs=1e-4)
    with torch.no_grad():
        assert float(objective(model, (mixture, query, present), reference)) == pytest.approx(float(loss), abs=1e-4)
    torch.save(model_package(model), tmp_path / "model.pth")
    assert load_model(tmp_path / "model.pth").masker.tagger
    # the config's null: the tagger for label queries, the conditioned gate for example queries
    assert _model(presence_gate=True).masker.tagger
    assert not _model(presence_gate=True, query_type="example").masker.tagger
    with pytest.raises(RecipeError, match="model.presence_head tagger needs model.presence_gate true"):
        _model(presence_gate=True, presence_head="tagger", query_type="example")
    with pytest.raises(RecipeError, match="model.presence_head must be one of conditioned, tagger, got 'both'"):
        _model(presence_gate=True, presence_head="both")
    data_dir, _ = tiny_data
    _, root = load_sources(data_dir)
    base = ViewDataset(views_dir(data_dir, 2) / "test.csv", root)
    labels = sorted(pd.read_csv(data_dir / "sources.csv")["label"].unique())
    items = QueryDataset(base, labels, negatives=1, return_meta=True, tags=True)
    for slot in range(items.slots):
        (_, condition, hot), target, meta = items[slot]
        row_labels = {meta[f"label_{i}"] for i in range(base.n_src)}
        assert [labels[c] for c in torch.nonzero(hot)[:, 0].tolist()] == sorted(row_labels)
        assert (labels[condition] in row_labels) == (meta["target"] >= 0)


def test_the_negative_level_metric_against_a_hand_computed_case():
    """An output at a tenth of the mixture's amplitude is 20 dB below it; one at a hundredth, 40 dB."""
    from local.evaluation.query_eval import level_db, summarise_queries

    x = np.sin(np.linspace(0, 100, 8000))
    assert level_db(0.1 * x, x) == pytest.approx(-20.0, abs=1e-6)
    assert level_db(0.01 * x, x) == pytest.approx(-40.0, abs=1e-6)
    import pandas as pd

    df = pd.DataFrame({"target": [-1, -1, -1, -1], "level_db": [-40.0, -25.0, -19.0, -5.0]})
    summary = summarise_queries(df, {"bootstrap_seed": 0, "bootstrap": 200})
    assert summary["negative_level_db"] == pytest.approx(-22.25) and summary["negative_share_above_-20db"] == 0.5


def test_a_query_model_card_loads_with_asteroids_from_pretrained_with_its_labels(tmp_path):
    from asteroid.models import BaseModel

    from local.models import load_model, model_package
    from local.models.card import model_card

    model = _model()
    for film in model.masker.films:
        torch.nn.init.normal_(film.weight, std=0.5)
    cfg = load_config("query_lstm_2src")
    cfg["model"]["labels"] = LABELS
    path = tmp_path / "best_model.pth"
    torch.save(model_card(model_package(model), cfg, ["CC0-1.0"]), path)
    theirs, ours = BaseModel.from_pretrained(str(path)).eval(), load_model(path).eval()
    assert type(theirs).__name__ == "QueryLSTMExtractor" and theirs.labels == LABELS
    mixture = torch.randn(1, 4000) * 0.1
    with torch.no_grad():
        torch.testing.assert_close(theirs(mixture, "siren"), ours(mixture, "siren"))
        torch.testing.assert_close(ours(mixture, "siren"), model(mixture, "siren"))


def test_the_query_recipe_trains_evaluates_and_reports_end_to_end(tmp_path):
    """run.sh with a tiny query_lstm config, stages 0-4: the labels are filled from the training split into the
    frozen config, stage 3 scores every source of each test view once plus one negative query per view, and the
    figures in summary.json are those of metrics.csv, recomputed here."""
    import json
    import os
    import subprocess

    import pandas as pd
    import yaml
    from conftest import ROOT, TINY_RECIPE

    tiny = {**TINY_RECIPE, "base": ["query_lstm_2src.yml"], "model": {"hidden_size": 16, "n_layers": 1},
            "training": dict(TINY_RECIPE["training"], epochs=1)}
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "tiny_query.yml").write_text(yaml.safe_dump(tiny))
    done = subprocess.run([str(ROOT / "run.sh"), "--tag", "tiny_query"], cwd=tmp_path, capture_output=True,
                          text=True, env=dict(os.environ, PYTHONWARNINGS="ignore"), timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    exp = tmp_path / "exp" / "tiny_query"
    frozen = yaml.safe_load((exp / "conf.yml").read_text())
    sources = pd.read_csv(tmp_path / "data" / "synth" / "sources.csv")
    assert frozen["model"]["labels"] == sorted(sources["label"].unique())  # synth: every category in training
    metrics = pd.read_csv(exp / "eval" / "metrics.csv")
    summary = json.loads((exp / "eval" / "summary.json").read_text())
    assert len(metrics) == 3 * 6
    assert all(sorted(targets) == [-1, 0, 1] for _, targets in metrics.groupby("mixture_id")["target"])
    positive, negative = metrics[metrics["target"] >= 0], metrics[metrics["target"] < 0]
    assert summary["si_sdri"] == pytest.approx(positive["si_sdri"].mean())
    assert summary["negative_share_above_-20db"] == pytest.approx((negative["level_db"] > -20).mean())
    assert (positive["wrong_source"].astype(bool) == (positive["other_si_sdr"] > positive["si_sdr"])).all()
    assert summary["wrong_source_share"] == pytest.approx(positive["wrong_source"].astype(bool).mean())
    assert (positive["missed"].astype(bool) == (positive["target_level_db"] < -20)).all()
    assert summary["missed_share"] == pytest.approx(positive["missed"].astype(bool).mean())
    assert "si_sdri" in done.stdout and (exp / "eval" / "index.html").is_file()
    assert "tiny_query" in (tmp_path / "exp" / "RESULTS.md").read_text()

    # separate-then-pick: a 2-source separator on the same views; each positive query scored on its best output,
    # recomputed here per row with SI-SDR written out
    (tmp_path / "conf" / "tiny_sep.yml").write_text(yaml.safe_dump({**TINY_RECIPE, "training": tiny["training"]}))
    for args in (["--tag", "tiny_sep", "--stop_stage", "2"],
                 ["--tag", "tiny_query", "--stage", "3", "--stop_stage", "3", "--eval.pick_baseline", "exp/tiny_sep"]):
        done = subprocess.run([str(ROOT / "run.sh"), *args], cwd=tmp_path, capture_output=True, text=True,
                              env=dict(os.environ, PYTHONWARNINGS="ignore"), timeout=600)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    from local.data.dataset import ViewDataset
    from local.data.sources import load_sources
    from local.models import load_model

    def si_sdr(reference, estimate):
        reference, estimate = reference - reference.mean(), estimate - estimate.mean()
        target = (estimate @ reference) / (reference @ reference) * reference
        return 10 * np.log10((target @ target) / ((estimate - target) @ (estimate - target)))

    metrics = pd.read_csv(exp / "eval" / "metrics.csv")
    summary = json.loads((exp / "eval" / "summary.json").read_text())
    # a summary written before a score was added (no query_scores in it) is scored again; a current one is not
    stale = json.loads((exp / "eval" / "summary.json").read_text())
    assert stale.pop("query_scores") == ["si_sdri", "level_db", "wrong_source", "missed", "presence"]
    (exp / "eval" / "summary.json").write_text(json.dumps(stale))
    for expect_skip in (False, True):
        again = subprocess.run([str(ROOT / "run.sh"), *args], cwd=tmp_path, capture_output=True, text=True,
                               env=dict(os.environ, PYTHONWARNINGS="ignore"), timeout=600)
        assert again.returncode == 0 and ("is up to date" in again.stdout) == expect_skip, again.stdout[-2000:]
    separator = load_model(tmp_path / "exp" / "tiny_sep" / "best_model.pth").eval()
    query_model = load_model(exp / "best_model.pth").eval()
    views = ViewDataset(tmp_path / "data" / "synth" / "2src" / "test.csv", load_sources(tmp_path / "data" / "synth")[1])
    positive = metrics[metrics["target"] >= 0]
    for row in positive.itertuples():
        index = int(views.df.index[views.df["mixture_id"] == row.mixture_id][0])
        mixture, sources = views[index]
        with torch.no_grad():
            outputs = separator(mixture[None])[0].double().numpy()
        reference = sources[row.target].double().numpy()
        best = max(si_sdr(reference, output) for output in outputs)
        assert row.pick_si_sdr == pytest.approx(best, abs=1e-3)
        assert row.pick_si_sdri == pytest.approx(best - si_sdr(reference, mixture.double().numpy()), abs=1e-3)
        with torch.no_grad():  # the wrong sound: the query's output against the mixture's other source
            extracted = query_model(mixture[None], [row.query])[0, 0].double().numpy()
        other = sources[1 - row.target].double().numpy()
        assert row.si_sdr == pytest.approx(si_sdr(reference, extracted), abs=1e-3)
        assert row.other_si_sdr == pytest.approx(si_sdr(other, extracted), abs=1e-3)
        assert row.target_level_db == pytest.approx(10 * np.log10((extracted @ extracted) / (reference @ reference)),
                                                    abs=1e-3)
        assert bool(row.wrong_source) == (row.other_si_sdr > row.si_sdr)
        with torch.no_grad():  # the default model has a presence gate: its probability per query
            _, logit = query_model.masked_and_presence(mixture[None], [row.query])
        assert row.presence == pytest.approx(float(torch.sigmoid(logit[0])), abs=1e-5)
    present, absent = positive["presence"].to_numpy(), metrics[metrics["target"] < 0]["presence"].to_numpy()
    pairs = (present[:, None] > absent[None]).mean() + 0.5 * (present[:, None] == absent[None]).mean()
    assert summary["presence_auc"] == pytest.approx(pairs)
    assert summary["pick_si_sdri"] == pytest.approx(positive["pick_si_sdri"].mean())
    assert summary["query_minus_pick"]["mean"] == pytest.approx((positive["si_sdri"] - positive["pick_si_sdri"]).mean())

    # without negative queries (data.query_negatives 0) stage 3 scores the positives only, and says so
    done = subprocess.run([str(ROOT / "run.sh"), "--tag", "tiny_query", "--exp_dir", "exp_no_negatives",
                           "--data.query_negatives", "0", "--stage", "2", "--stop_stage", "3"], cwd=tmp_path,
                          capture_output=True, text=True, env=dict(os.environ, PYTHONWARNINGS="ignore"), timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "no negative queries (data.query_negatives 0)" in done.stdout
    eval_dir = tmp_path / "exp_no_negatives" / "tiny_query" / "eval"
    assert (pd.read_csv(eval_dir / "metrics.csv")["target"] >= 0).all()
    assert "negative_level_db" not in pd.read_csv(eval_dir / "per_category.csv")


def test_the_cli_extracts_or_removes_the_queried_sound_of_a_stereo_44k_file(tmp_path, capsys):
    """--query writes only that sound, --remove the downmixed mixture minus it, both at the file's 44.1 kHz and
    length; a wrong label or a missing query is one line and exit status 1."""
    import soundfile as sf

    from local.models import model_package
    from local.models.card import model_card
    from local.separate import main

    model = _model()
    for film in model.masker.films:
        torch.nn.init.normal_(film.weight, std=0.5)
    cfg = load_config("query_lstm_2src")
    cfg["model"]["labels"] = LABELS
    torch.save(model_card(model_package(model), cfg, ["CC0-1.0"]), tmp_path / "best_model.pth")
    t = np.arange(int(44100 * 1.5)) / 44100
    stereo = np.stack([0.3 * np.sin(2 * np.pi * 440 * t), 0.2 * np.sin(2 * np.pi * 1200 * t)], axis=1)
    sf.write(tmp_path / "street.wav", stereo, 44100)
    args = ["--exp", str(tmp_path), "--out", str(tmp_path / "out"), str(tmp_path / "street.wav")]
    main([*args, "--query", "siren"])
    main([*args, "--remove", "siren"])
    (kept, sr), (rest, sr2) = (sf.read(tmp_path / "out" / d / "street.wav") for d in ("siren", "without_siren"))
    assert sr == sr2 == 44100 and kept.ndim == 1 and len(kept) == len(t)
    np.testing.assert_allclose(kept + rest, stereo.mean(axis=1), atol=1e-4)
    assert np.abs(kept).max() > 0 and sorted(p.name for p in (tmp_path / "out").iterdir()) == ["siren",
                                                                                               "without_siren"]
    capsys.readouterr()
    for extra, message in ((["--query", "cat"], "unknown label 'cat'; this model knows bird, dog, siren"),
                           ([], "this is a query model: give one of --query LABEL or --remove LABEL")):
        with pytest.raises(SystemExit) as stop:
            main([*args, *extra])
        assert stop.value.code == 1 and message in capsys.readouterr().err


def test_the_extraction_grid_pairs_each_query_cell_with_a_separator_of_its_size():
    import yaml
    from conftest import ROOT

    cells = yaml.safe_load((ROOT / "conf" / "grids" / "extraction.yml").read_text())["cells"]
    configs = {tag: load_config(tag) for tag in cells}
    queries = {c["data"]["n_src"] for c in configs.values() if c["model"]["name"] == "query_lstm"}
    separators = {c["data"]["n_src"] for c in configs.values() if c["model"]["name"] == "lstm"}
    assert queries == separators == {2, 3, 5}
    assert all(c["loss"]["name"] == ("query_sisdr" if c["model"]["name"] == "query_lstm" else "sisdr")
               for c in configs.values())


def test_a_query_by_example_depends_on_the_clip():
    model = _model(query_type="example")
    for film in model.masker.films:
        torch.nn.init.normal_(film.weight, std=0.5)
    mixture, clip = torch.randn(2, 4000) * 0.1, torch.randn(2, 1000) * 0.1
    with torch.no_grad():
        out = model(mixture, clip)
        assert out.shape == (2, 1, 4000)
        assert (out - model(mixture, clip.flip(-1) * 3)).abs().max() > 1e-5
        torch.testing.assert_close(model(mixture[:1], clip[0]), out[:1])  # one clip for the batch


def test_query_by_example_with_a_held_out_category_end_to_end(tmp_path):
    """model.query_type example and one category held out of training: the frozen labels leave it out, and stage 3
    queries every test category by example clips, reporting the held-out one apart (the few-shot case)."""
    import json
    import os
    import subprocess

    import pandas as pd
    import yaml
    from conftest import ROOT, TINY_RECIPE

    tiny = {**TINY_RECIPE, "base": ["query_lstm_2src.yml"],
            "model": {"hidden_size": 16, "n_layers": 1, "query_type": "example"},
            "data": dict(TINY_RECIPE["data"], query_held_out=["siren"], query_example_seconds=0.25),
            "training": dict(TINY_RECIPE["training"], epochs=1)}
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "tiny_example.yml").write_text(yaml.safe_dump(tiny))
    done = subprocess.run([str(ROOT / "run.sh"), "--tag", "tiny_example", "--stop_stage", "3"], cwd=tmp_path,
                          capture_output=True, text=True, env=dict(os.environ, PYTHONWARNINGS="ignore"), timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    exp = tmp_path / "exp" / "tiny_example"
    labels = sorted(pd.read_csv(tmp_path / "data" / "synth" / "sources.csv")["label"].unique())
    assert "siren" in labels
    assert yaml.safe_load((exp / "conf.yml").read_text())["model"]["labels"] == [x for x in labels if x != "siren"]
    metrics = pd.read_csv(exp / "eval" / "metrics.csv")
    summary = json.loads((exp / "eval" / "summary.json").read_text())
    held = metrics[(metrics["query"] == "siren") & (metrics["target"] >= 0)]
    if len(held):  # siren is in some test views: queried there by example, reported apart
        assert summary["held_out_si_sdri"] == pytest.approx(held["si_sdri"].mean())
    per_category = pd.read_csv(exp / "eval" / "per_category.csv")
    assert per_category.set_index("label")["held_out"].to_dict().get("siren", True)


def test_the_cli_extracts_the_sound_like_an_example_clip(tmp_path, capsys):
    import soundfile as sf

    from local.models import model_package
    from local.models.card import model_card
    from local.separate import main

    model = _model(query_type="example")
    cfg = load_config("query_lstm_2src", ["model.query_type=example"])
    cfg["model"]["labels"] = LABELS
    torch.save(model_card(model_package(model), cfg, ["CC0-1.0"]), tmp_path / "best_model.pth")
    t = np.arange(44100) / 44100
    sf.write(tmp_path / "mix.wav", 0.3 * np.sin(2 * np.pi * 440 * t), 44100)
    sf.write(tmp_path / "bark.flac", 0.3 * np.sin(2 * np.pi * 900 * t[:22050]), 44100)
    args = ["--exp", str(tmp_path), "--out", str(tmp_path / "out"), str(tmp_path / "mix.wav")]
    main([*args, "--query_audio", str(tmp_path / "bark.flac")])
    kept, sr = sf.read(tmp_path / "out" / "like_bark" / "mix.wav")
    assert sr == 44100 and len(kept) == 44100
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main([*args, "--query", "dog"])
    assert "queried by example: give --query_audio" in capsys.readouterr().err


def test_a_held_out_category_that_the_dataset_lacks_is_refused(tiny_data):
    from local.data.view_csv import views_dir
    from local.training.train import with_query_labels

    data_dir, _ = tiny_data
    cfg = load_config("query_lstm_2src", ["data.query_held_out=[sirne]"])
    with pytest.raises(RecipeError, match="data.query_held_out names sirne, not a category of this dataset"):
        with_query_labels(cfg, views_dir(data_dir, 2))


def test_the_gap_to_separate_then_pick_splits_into_wrong_sound_and_right_sound_queries():
    """wrong_sound_split on four positive queries (one negative ignored), by hand: query - pick is -1, -9, +1, -3;
    the wrong-sound ones (2nd, 4th) contribute (-9 - 3) / 4 = -3 dB of the mean gap -3; right-sound mean 0."""
    import pandas as pd

    from local.benchmarks.extraction import wrong_sound_split

    metrics = pd.DataFrame({"target": [0, 1, 0, 1, -1], "si_sdri": [5.0, -4.0, 8.0, 1.0, None],
                            "pick_si_sdri": [6.0, 5.0, 7.0, 4.0, None],
                            "wrong_source": [False, True, False, True, None]})
    split = wrong_sound_split(metrics)
    assert split == {"wrong_source_share": 0.5, "query_minus_pick_right_sound": 0.0, "gap_from_wrong_sound_db": -3.0}
    assert wrong_sound_split(metrics.drop(columns="pick_si_sdri")) == {}


def test_the_extraction_benchmark_keeps_one_row_per_source_count_and_query_options():
    """merge_rows: a run replaces the earlier row of its own (n_src, query_options) only; rows of other options
    (a screen) and other source counts stay, sorted by source count."""
    from local.benchmarks.extraction import merge_rows

    earlier = [{"n_src": 2, "query_options": [], "si_sdri": 1.0},
               {"n_src": 2, "query_options": ["--model.presence_gate", "true"], "si_sdri": 2.0},
               {"n_src": 5, "query_options": [], "si_sdri": 3.0}]
    rows = [{"n_src": 2, "query_options": ["--model.presence_gate", "true"], "si_sdri": 4.0}]
    merged = merge_rows(earlier, rows)
    assert [(row["n_src"], row["si_sdri"]) for row in merged] == [(2, 1.0), (2, 4.0), (5, 3.0)]
    assert merge_rows([{"n_src": 5, "si_sdri": 3.0}], [{"n_src": 5, "query_options": [], "si_sdri": 6.0}]) == \
        [{"n_src": 5, "query_options": [], "si_sdri": 6.0}]
    # rows keep the machine that trained them; an earlier row without one takes the earlier file's
    kept = merge_rows([{"n_src": 2, "si_sdri": 1.0}, {"n_src": 3, "si_sdri": 2.0, "machine": "B"}],
                      [{"n_src": 5, "si_sdri": 6.0, "machine": "C"}], earlier_machine="A")
    assert [row["machine"] for row in kept] == ["A", "B", "C"]


def test_the_presence_auc_counts_pairs_of_a_present_and_an_absent_query_by_hand():
    """presence_auc: present gates 0.9, 0.4, 0.6 against absent 0.5, 0.4: of the six pairs, four are ordered right,
    one wrong and one tied (half): 4.5 / 6; summarise_queries reports it from the `presence` column, and not for a
    model without a gate."""
    import pandas as pd

    from local.evaluation.query_eval import presence_auc, summarise_queries

    assert presence_auc([0.9, 0.4, 0.6], [0.5, 0.4]) == pytest.approx(4.5 / 6)
    df = pd.DataFrame({"target": [0, 1, 0, -1, -1], "si_sdr": [1.0, 2.0, 3.0, None, None],
                       "si_sdri": [1.0, 2.0, 3.0, None, None], "level_db": [None, None, None, -30.0, -10.0],
                       "presence": [0.9, 0.4, 0.6, 0.5, 0.4]})
    ecfg = {"bootstrap": 100, "bootstrap_seed": 0}
    assert summarise_queries(df, ecfg)["presence_auc"] == pytest.approx(0.75)
    assert "presence_auc" not in summarise_queries(df.drop(columns="presence"), ecfg)


def test_two_query_models_are_compared_per_query_and_refused_on_different_queries(tmp_path, capsys):
    """local.benchmarks.query_pairs: B - A over the same queries, written out here: SI-SDRi (3 - 1 + 2 - 2 + 1 - 3)
    / 3 = 0; missed 1/3 -> 0 = -1/3; negatives above -20 dB, A {-10, -30} -> 1/2, B {-25, -15} -> 1/2, paired 0
    with a non-degenerate interval (one query leaks less, one more); other queries are refused in one line."""
    import pandas as pd

    from local.benchmarks.query_pairs import main

    rows = {"mixture_id": ["m0", "m0", "m1", "m0", "m1"], "query": ["dog", "bird", "dog", "siren", "bird"],
            "target": [0, 1, 0, -1, -1]}
    a = pd.DataFrame({**rows, "si_sdri": [1.0, 2.0, 3.0, None, None], "missed": [True, False, False, None, None],
                      "level_db": [None, None, None, -10.0, -30.0]})
    b = pd.DataFrame({**rows, "si_sdri": [3.0, 2.0, 1.0, None, None], "missed": [False, False, False, None, None],
                      "level_db": [None, None, None, -25.0, -15.0]})
    for name, df in (("a", a), ("b", b)):
        (tmp_path / name / "eval").mkdir(parents=True)
        df.to_csv(tmp_path / name / "eval" / "metrics.csv", index=False)
    main([str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "pairs.json")])
    import json

    pairs = json.loads((tmp_path / "pairs.json").read_text())["pairs"]
    assert pairs["si_sdri"]["mean"] == pytest.approx(0.0) and pairs["si_sdri"]["n"] == 3
    assert pairs["missed_share"]["mean"] == pytest.approx(-1 / 3)
    assert pairs["missed_share"]["a"] == pytest.approx(1 / 3) and pairs["missed_share"]["b"] == 0.0
    leak = pairs["negative_share_above_-20db"]
    assert (leak["a"], leak["b"], leak["mean"], leak["n"]) == (0.5, 0.5, 0.0, 2)
    assert leak["ci95"][0] < 0 < leak["ci95"][1]
    b.iloc[:1].assign(query="cat").pipe(lambda df: pd.concat([df, b.iloc[1:]])).to_csv(
        tmp_path / "b" / "eval" / "metrics.csv", index=False)
    capsys.readouterr()
    with pytest.raises(SystemExit, match="ERROR: the two evaluations hold different queries \\(2 unmatched"):
        main([str(tmp_path / "a"), str(tmp_path / "b")])
    with pytest.raises(SystemExit, match="metrics.csv not found"):
        main([str(tmp_path / "a"), str(tmp_path / "none")])

import numpy as np
import pytest
import torch

from local.common.config import load_config
from local.common.errors import RecipeError
from local.models import build_model, count_parameters, load_model, model_package

CATEGORY_MODELS = ["lstm", "vtf", "stt", "gab", "drnn", "srnn", "sudormrf", "conv_tasnet"]

SMALL = {
    "lstm": ["model.hidden_size=32", "model.n_layers=2"],
    "vtf": ["model.d_model=32", "model.n_heads=2", "model.d_ff=64", "model.n_layers=2"],
    "stt": ["model.d_model=16", "model.n_heads=2", "model.d_ff=32", "model.n_layers=1", "model.seq_len=32",
            "model.c_out=8", "model.d_out=8", "model.ks2=4", "model.generator_size=16"],
    "gab": ["model.channels=4", "model.dilations=[[1, 1], [2, 2]]", "model.lstm_hidden=16", "model.fc_dim=32"],
    "drnn": ["model.hidden_size=32"],
    "srnn": ["model.hidden_size=32"],
    "sudormrf": ["model.bn_chan=16", "model.num_blocks=2", "filterbank.n_filters=32"],
    "conv_tasnet": ["model.n_blocks=2", "model.n_repeats=1", "model.bn_chan=16", "model.hid_chan=16",
                    "model.skip_chan=16", "filterbank.n_filters=32"],
}


def small_model(name, n_src, extra=()):
    return build_model(load_config(f"{name}_{n_src}src", SMALL[name] + list(extra)))


@pytest.mark.parametrize("name", CATEGORY_MODELS)
@pytest.mark.parametrize("n_src", [2, 3, 5])
def test_forward_backward_shapes(name, n_src):
    model = small_model(name, n_src)
    mix = torch.randn(2, 3001)
    est = model(mix)
    assert est.shape == (2, n_src, 3001)
    assert torch.isfinite(est).all()
    est.pow(2).mean().backward()
    # Conv-TasNet's last block computes a residual output that nothing reads (Asteroid's design): no gradient there
    grads = [p.grad for n, p in model.named_parameters()
             if p.requires_grad and not (name == "conv_tasnet" and "res_conv" in n)]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert count_parameters(model) > 0


@pytest.mark.parametrize("name", ["drnn", "srnn"])
def test_soft_mask_layer_makes_estimates_sum_to_the_mixture(name):
    model = small_model(name, 3).eval()
    mix = torch.randn(1, 4000)
    with torch.no_grad():
        est = model(mix)
    torch.testing.assert_close(est.sum(dim=1), mix, atol=1e-4, rtol=0)


def test_drnn_parameter_count_matches_the_architecture():
    """DRNN-2 with 3 hidden layers: Linear(F,H) + RNN(H,H) + Linear(H,H) + Linear(H, n*F), counted by hand."""
    f, h, n = 129, 32, 2
    model = small_model("drnn", n)
    linear = lambda a, b: a * b + b
    rnn = h * (h + h) + 2 * h  # input and recurrent weights, two biases
    assert count_parameters(model) == linear(f, h) + rnn + linear(h, h) + linear(h, n * f)
    assert [type(layer).__name__ for layer in model.masker.layers] == ["Sequential", "SingleRNN", "Sequential"]
    srnn = small_model("srnn", n)
    assert all(type(layer).__name__ == "SingleRNN" for layer in srnn.masker.layers)


def test_vtf_is_order_aware_through_positions():
    """Self-attention alone is permutation-equivariant over frames; the sinusoidal positions break that."""
    from local.models.vtf import sinusoidal_positions

    table = sinusoidal_positions(50, 32)
    assert table.shape == (50, 32)
    torch.testing.assert_close(table[:, 0], torch.sin(torch.arange(50.0)))
    torch.testing.assert_close(table[:, 1], torch.cos(torch.arange(50.0)))


def test_gab_uses_complex_masks():
    model = small_model("gab", 2)
    assert model.mask_type == "complex"
    tf = model.encoder(torch.randn(1, 1, 2000))
    assert model.masker(tf).shape == (1, 2, tf.shape[1], tf.shape[2])  # real and imaginary part per bin


def test_all_one_masks_reconstruct_the_mixture_exactly():
    """The STFT/iSTFT pair with edge padding is a perfect reconstruction, edges included."""
    model = small_model("lstm", 2)
    model.masker.forward = lambda tf: torch.ones(tf.shape[0], 2, model.n_freq, tf.shape[-1])
    mix = torch.randn(2, 3333)
    est = model(mix)
    torch.testing.assert_close(est[:, 0], mix, atol=1e-5, rtol=0)


def test_unknown_model_and_model_key_are_refused():
    with pytest.raises(RecipeError, match="unknown model.name 'lstmm'"):
        build_model(load_config("lstm_2src", ["model.name=lstmm"]))
    with pytest.raises(RecipeError, match="unknown config key 'model.hiden_size'.*Did you mean 'model.hidden_size'"):
        build_model(load_config("lstm_2src", ["model.hiden_size=3"]))
    with pytest.raises(RecipeError, match="model 'vtf' cannot be built.*divisible"):
        build_model(load_config("vtf_2src", ["model.d_model=30", "model.n_heads=4"]))


SPEAKER_MODELS = {
    "dpcl_dprnn_2spk_small": ["model.hid_size=16", "model.n_repeats=1", "model.chunk_size=20"],
    "chimera_dprnn_2spk_small": ["model.hid_size=16", "model.n_repeats=1", "model.chunk_size=20"],
    "dprnn_tasnet_2spk_small": ["model.hid_size=16", "model.n_repeats=1"],
    "upit_lstm_2spk": ["model.hidden_size=16", "model.n_layers=1"],
}


@pytest.mark.parametrize("name", CATEGORY_MODELS + list(SPEAKER_MODELS))
def test_serialized_package_roundtrip(tmp_path, name):
    if name in SPEAKER_MODELS:
        model = build_model(load_config(name, SPEAKER_MODELS[name])).eval()
    else:
        model = small_model(name, 2).eval()
    torch.save(model_package(model), tmp_path / "best_model.pth")
    loaded = load_model(tmp_path / "best_model.pth")
    assert count_parameters(loaded) == count_parameters(model)
    x = torch.randn(1, 2000)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))


def test_a_file_that_is_not_a_model_package(tmp_path):
    (tmp_path / "junk.pth").write_bytes(b"not a model")
    with pytest.raises(RecipeError, match="junk.pth is not a model package"):
        load_model(tmp_path / "junk.pth")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "dict.pth")
    with pytest.raises(RecipeError, match="expected model_name, model_args, state_dict"):
        load_model(tmp_path / "dict.pth")


def test_stt_layer_is_the_sum_of_a_temporal_and_a_spectral_branch_written_out():
    """One spectro-temporal layer against its equation written out here (the authors' DoubleEncoder step):
    y = B_t(x) + B_s(x^T)^T, each branch x1 = x + conv(LN(x)), x2 = x1 + MHA(LN(x1)), y = x2 + FF(LN(x2)) with
    MHA = softmax(Q K^T / sqrt(d_k)) V per head. The temporal branch's tokens are the T frames (weights T x T),
    the spectral branch's the d_model channels (weights d_model x d_model), whatever the frame order."""
    import math

    model = small_model("stt", 2).eval()
    layer = model.masker.network.layers[0]
    seq_len, d_model = 32, 16
    x = torch.randn(3, seq_len, d_model)

    def attention(block, h):
        qkv = block.qkv(h)
        size = h.shape[-1]
        q, k, v = qkv[..., :size], qkv[..., size : 2 * size], qkv[..., 2 * size :]
        heads, d_k = block.n_heads, size // block.n_heads
        outs = []
        for i in range(heads):
            qi, ki, vi = (t[..., i * d_k : (i + 1) * d_k] for t in (q, k, v))
            outs.append(torch.softmax(qi @ ki.transpose(1, 2) / math.sqrt(d_k), dim=-1) @ vi)
        return block.out(torch.cat(outs, dim=-1))

    def branch(b, h):
        h = h + b.conv(b.norms[0](h))
        h = h + attention(b.attention, b.norms[1](h))
        return h + b.feed_forward(b.norms[2](h))

    with torch.no_grad():
        expected = branch(layer.temporal, x) + branch(layer.spectral, x.transpose(1, 2)).transpose(1, 2)
        torch.testing.assert_close(layer(x), expected, atol=1e-5, rtol=1e-5)
        assert layer.temporal.attention.weights(layer.temporal.norms[1](x)).shape == (3, 2, seq_len, seq_len)
        shuffled = x[:, torch.randperm(seq_len)].transpose(1, 2)
        assert layer.spectral.attention.weights(layer.spectral.norms[1](shuffled)).shape == (3, 2, d_model, d_model)
    # the input is the complex STFT (real and imaginary parts of every bin), the output one complex mask per source
    assert model.masker.network.embed.in_features == 2 * 129 and model.mask_type == "complex"
    assert model.masker.network.generator_out.out_features == 2 * 2 * 129 and model.masker.network.blstm.bidirectional


def test_stt_chunks_any_length_and_overlap_adds_to_the_unchunked_output():
    """A frame-wise network chunked into seq_len frames with half-chunk overlap and overlap-added gives what it gives
    on the whole input, on a length that is not a multiple of the chunk; the model keeps any input length."""
    from local.models.stt import chunk_starts, overlap_add

    frames, seq_len = 77, 32
    assert chunk_starts(frames, seq_len) == [0, 16, 32, 45]
    tf = torch.randn(2, 10, frames)

    def framewise(chunk):  # [B, 2F, seq_len] -> [B, 2, 2F, seq_len]: only each frame's own values
        return torch.stack([chunk * 2.0, chunk.tanh()], dim=1)

    torch.testing.assert_close(overlap_add(framewise, tf, seq_len), framewise(tf), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(overlap_add(framewise, tf[..., :20], seq_len), framewise(tf[..., :20]))
    model = small_model("stt", 2).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 64 * 77 + 5)).shape == (1, 2, 64 * 77 + 5)


def test_stt_input_compression_raises_each_bins_magnitude_and_keeps_its_phase():
    """compress_magnitude against numpy's complex numbers, bin by bin: |X|^0.3 with the angle of X; power 1 is the
    identity (the authors' input); the masks still multiply the linear STFT; bad values are refused by name."""
    from local.models.stt import compress_magnitude

    tf = torch.randn(2, 2 * 5, 7, dtype=torch.float64)
    complex_tf = tf[:, :5].numpy() + 1j * tf[:, 5:].numpy()
    expected = np.abs(complex_tf) ** 0.3 * np.exp(1j * np.angle(complex_tf))
    out = compress_magnitude(tf, 0.3, eps=0.0).numpy()
    np.testing.assert_allclose(out[:, :5] + 1j * out[:, 5:], expected, rtol=1e-10)
    assert compress_magnitude(tf, 1.0) is tf
    model = small_model("stt", 2, ["model.input_compression=0.3"]).eval()
    assert model.masker.input_compression == 0.3 and model.masker_args()["input_compression"] == 0.3
    from local.common.errors import RecipeError

    with pytest.raises(RecipeError, match="model.input_compression must be in"):
        small_model("stt", 2, ["model.input_compression=0"])
    with pytest.raises(RecipeError, match="applies to output: mask only"):
        small_model("stt", 2, ["model.input_compression=0.5", "model.output=direct"])


def test_stt_initial_mask_starts_every_estimate_at_its_share_of_the_mixture():
    """model.initial_mask m: with the generator's output weights at zero (so only its bias speaks), every source's
    estimate is m times the mixture, the STFT round trip's error aside; with null (the authors') the bias is PyTorch's
    random initialisation and the estimates are not; the default config starts at 0.5; bad values are refused by
    name."""
    mix = torch.randn(2, 64 * 40)
    for extra, expect_share in ((["model.initial_mask=0.5"], True), (["model.initial_mask=null"], False)):
        model = small_model("stt", 2, extra).eval()
        with torch.no_grad():
            model.masker.network.generator_out.weight.zero_()
            est = model(mix)
        share = torch.allclose(est, 0.5 * mix.unsqueeze(1).expand_as(est), atol=1e-4)
        assert share == expect_share
    assert small_model("stt", 2).masker_args()["initial_mask"] == 0.5
    with pytest.raises(RecipeError, match="model.initial_mask must be null or a number"):
        small_model("stt", 2, ["model.initial_mask=abc"])
    with pytest.raises(RecipeError, match="model.initial_mask applies to output: mask only"):
        small_model("stt", 2, ["model.initial_mask=0.5", "model.output=direct"])


@pytest.mark.parametrize("n_src", [2, 3, 5])
def test_stt_learns_to_separate_synth_mixtures(n_src, tiny_data):
    """STT (small) fitted for 60 steps on 4 synth mixtures of n_src categories separates them: SI-SDRi above
    3 dB with the best assignment (asteroid's PIT SI-SDR, the loss of the sisdr configs)."""
    from asteroid.losses import PITLossWrapper, pairwise_neg_sisdr

    from local.data.dataset import ViewDataset
    from local.data.sources import load_sources
    from local.data.views import make_views

    data_dir, cfg = tiny_data
    views = make_views(dict(cfg["data"], n_src=n_src), data_dir, announce_skip=False)
    dataset = ViewDataset(views / "train.csv", load_sources(data_dir)[1])
    mixture, sources = (torch.stack(x) for x in zip(*(dataset[i][:2] for i in range(4))))
    torch.manual_seed(0)
    model = small_model("stt", n_src)
    loss = PITLossWrapper(pairwise_neg_sisdr, pit_from="pw_mtx")
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    before = -loss(mixture.unsqueeze(1).expand_as(sources), sources).item()
    for _ in range(60):
        optimizer.zero_grad()
        value = loss(model(mixture), sources)
        value.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        after = -loss(model(mixture), sources).item()
    assert after - before > 3.0, (before, after)


@pytest.mark.parametrize("grid", ["wildmix", "universal"])
def test_every_grid_cell_is_a_config_that_builds(grid):
    import yaml

    from local.common.config import ROOT

    cells = yaml.safe_load((ROOT / "conf" / "grids" / f"{grid}.yml").read_text())["cells"]
    assert len(cells) == len(set(cells))
    for tag in cells:
        cfg = load_config(tag)
        assert cfg["model"]["name"] == tag.split("_")[0] or tag.startswith(("sudormrf", "conv_tasnet")), tag
        if cfg["model"]["name"] == "stt":
            assert count_parameters(build_model(cfg)) > 0
    if grid == "wildmix":
        assert sum(tag.startswith("stt_") for tag in cells) == 9


@pytest.mark.parametrize("n_src, n_filters", [(2, 32), (3, 40)])
def test_sudormrf_matmul_mask_layer_equals_asteroids_conv(n_src, n_filters):
    """local/models/sudormrf.py replaces Asteroid's (K, 1) mask Conv2d by a banded matrix product (a CPU speed
    fix); the outputs and every gradient must be Asteroid's, element by element, and packages interchangeable."""
    from asteroid.models import SuDORMRFNet as Asteroid

    from local.models.sudormrf import SuDORMRFNet
    args = dict(n_src=n_src, bn_chan=16, num_blocks=2, upsampling_depth=2, n_filters=n_filters, kernel_size=21,
                stride=10)
    torch.manual_seed(0)
    reference = Asteroid(**args).double()
    ours = SuDORMRFNet(**args).double()
    ours.load_state_dict(reference.state_dict())
    assert list(ours.state_dict()) == list(reference.state_dict())
    mix = torch.randn(3, 2001, dtype=torch.float64)
    est_ref, est = reference(mix), ours(mix)
    torch.testing.assert_close(est, est_ref, rtol=1e-10, atol=1e-12)
    target = torch.randn_like(est)
    ((est_ref - target) ** 2).sum().backward()
    ((est - target) ** 2).sum().backward()
    for (name, p_ref), p in zip(reference.named_parameters(), ours.parameters()):
        torch.testing.assert_close(p.grad, p_ref.grad, rtol=1e-8, atol=1e-10, msg=name)
    # the mask layer alone, against a convolution written out here: y[b,s,c,t] = bias[s] + sum_k w[s,k] x[b,c+k-P,t]
    layer, x = ours.masker.m, torch.randn(2, 1, n_filters, 7, dtype=torch.float64)
    w, pad = layer.weight[:, 0, :, 0].detach(), layer.pad
    expected = torch.zeros(2, n_src, n_filters, 7, dtype=torch.float64) + layer.bias.detach()[None, :, None, None]
    for c in range(n_filters):
        for k in range(w.shape[1]):
            if 0 <= c + k - pad < n_filters:
                expected[:, :, c] += w[None, :, k, None] * x[:, 0, c + k - pad][:, None]
    torch.testing.assert_close(layer(x).detach(), expected)
    # a package saved with our class loads into Asteroid's (same name, same state dict)
    package = model_package(ours)
    assert package["model_name"] == "SuDORMRFNet"
    Asteroid(**package["model_args"]).load_state_dict(package["state_dict"])


SPEAKER_SMALL = {"dpcl_dprnn_2spk_small": ["model.hid_size=16", "model.n_repeats=1", "model.chunk_size=20"],
                 "chimera_dprnn_2spk_small": ["model.hid_size=16", "model.n_repeats=1", "model.chunk_size=20"],
                 "dprnn_tasnet_2spk_small": ["model.hid_size=16", "model.n_repeats=1", "model.bn_chan=16",
                                             "model.chunk_size=20"]}


@pytest.mark.parametrize("tag", [f"{name}_2src" for name in CATEGORY_MODELS] + list(SPEAKER_SMALL))
def test_every_family_loads_with_asteroids_from_pretrained_and_publishes(tag, tmp_path):
    """A model card of every family (10: 8 category models, DPCL-DPRNN / Chimera++, DPRNN-TasNet) loads with
    Asteroid's own `BaseModel.from_pretrained(path)` after `import local.models`, into the same class (SuDoRM-RF:
    Asteroid's, whose outputs are the same), with the estimates of the recipe's own loading; Asteroid's
    `save_publishable` accepts it."""
    from asteroid.models import BaseModel
    from asteroid.models.publisher import save_publishable

    from local.models.card import model_card

    name = tag[: -len("_2src")] if tag.endswith("_2src") else tag
    cfg = load_config(tag, SMALL.get(name) or SPEAKER_SMALL[tag])
    model = build_model(cfg)
    package = model_card(model_package(model), cfg, ["GPL-2+"])
    path = tmp_path / "best_model.pth"
    torch.save(package, path)
    theirs, ours = BaseModel.from_pretrained(str(path)).eval(), load_model(path).eval()
    assert type(theirs).__name__ == type(ours).__name__
    mixture = torch.randn(1, 4000) * 0.1
    with torch.no_grad():
        torch.manual_seed(0)
        a = theirs(mixture)
        torch.manual_seed(0)
        b = ours(mixture)
    assert torch.allclose(a, b, atol=1e-5)
    published = save_publishable(str(tmp_path / "publish"), torch.load(path, weights_only=True),
                                 metrics={"si_sdri": 1.0}, train_conf=cfg, recipe="listener")
    assert published["licenses"] == ["GPL-2+"] and published["dataset"] == cfg["data"]["dataset"]
    assert (tmp_path / "publish" / "model.pth").is_file()

import pytest
import torch

from local.config import load_config
from local.errors import RecipeError
from local.models import build_model, count_parameters, load_model, model_package


@pytest.mark.parametrize("n_src", [2, 3, 5])
def test_lstm_output_shape_and_backward(n_src):
    cfg = load_config("lstm_2src", [f"data.n_src={n_src}", "model.hidden_size=32", "model.n_layers=2"])
    model = build_model(cfg)
    mix = torch.randn(3, 4001)
    est = model(mix)
    assert est.shape == (3, n_src, 4001)
    assert torch.isfinite(est).all()
    est.pow(2).mean().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_all_one_masks_reconstruct_the_mixture_exactly():
    """The STFT/iSTFT pair with edge padding is a perfect reconstruction, edges included."""
    model = build_model(load_config("lstm_2src", ["model.hidden_size=16"]))
    model.masker.forward = lambda tf: torch.ones(tf.shape[0], 2, model.n_freq, tf.shape[-1])
    mix = torch.randn(2, 3333)
    est = model(mix)
    torch.testing.assert_close(est[:, 0], mix, atol=1e-5, rtol=0)


def test_unknown_model_and_model_key_are_refused():
    with pytest.raises(RecipeError, match="unknown model.name 'lstmm'"):
        build_model(load_config("lstm_2src", ["model.name=lstmm"]))
    with pytest.raises(RecipeError, match="unknown config key 'model.hiden_size'.*Did you mean 'model.hidden_size'"):
        build_model(load_config("lstm_2src", ["model.hiden_size=3"]))


def test_serialized_package_roundtrip(tmp_path):
    model = build_model(load_config("lstm_2src", ["model.hidden_size=16"])).eval()
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

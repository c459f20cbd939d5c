"""Benchmark: why a deep-clustering model does (not) separate: embeddings or clustering?

    python -m local.benchmarks.dpcl_diagnostics --exp exp/dpcl_dprnn_2spk_small [--data_root data]
        [--n_mixtures 100] [--overfit_steps 200] [--out exp/benchmarks/dpcl_diagnostics.json]

On the experiment's test views (run from the directory holding data/ and exp/), per mixture:
  (b) SI-SDRi of the model's own inference (k-means over the active bins' embeddings), of "oracle centroids"
      (every bin assigned to the nearer of the two true speakers' mean embeddings, the means taken over the
      active bins each speaker dominates), and of the ideal binary mask. Oracle centroids near the IBM and
      k-means far below: the clustering fails; both far below: the embeddings do;
  (c) the classic DC loss of the embeddings, next to the value a collapsed embedding (every bin the same
      vector) gets, 1 - sum_c p_c^2 with p_c the share of active bins speaker c dominates;
  (d) a fresh model of the same config fitted to one batch of training views for --overfit_steps steps: its
      training loss and SI-SDRi on that batch (a model that cannot fit one batch has a bug or no capacity).
  (e) two more read-outs of the same embeddings, telling "no partition in the embeddings" from "a partition
      k-means cannot see": the oracle linear read-out (per mixture, the weighted least-squares map from the
      embeddings to the true one-hot dominant speaker, then each bin to its larger output), and k-means on the
      whitened embeddings V (V^T W V)^-1/2 (`whitened_kmeans`). DC-W (Wang, Le Roux and Hershey 2018) depends on
      the embeddings only through their span, the same for V and V R with R invertible, so it does not ask for
      clusters k-means can find in V itself; whitening removes the R. A linear read-out fitted to the labels
      finds some partition in any features, so the same read-outs of an untrained model of the same config
      (seeded) are reported next to them (`untrained`): what training added is the difference.
(a), oracle embeddings through k-means, masks and iSTFT, is a test: tests/test_deep_clustering.py.
"""
import argparse
from pathlib import Path

import numpy as np
import torch
from asteroid.dsp.vad import ebased_vad
from asteroid_filterbanks.transforms import mag

from local.benchmarks import publish
from local.common.errors import RecipeError, exit_on_recipe_error
from local.common.frozen import read_frozen
from local.data.dataset import ViewDataset
from local.data.sources import load_sources
from local.data.view_csv import views_dir
from local.evaluation.metrics import si_sdr
from local.evaluation.oracle import OracleMasks
from local.models import build_model, load_model
from local.models.dpcl import bin_weights
from local.models.kmeans import batched_kmeans, whiten
from local.models.stft_masker import edge_padding
from local.training.losses import deep_clustering_loss, make_loss


def _best_si_sdri(refs, estimates, mixture):
    scores = [si_sdr(refs, estimates).mean(), si_sdr(refs, estimates[::-1]).mean()]
    return float(max(scores) - si_sdr(refs, np.stack([mixture] * len(refs))).mean())


def diagnose(model, dataset, n_mixtures, vad_db):
    oracle = OracleMasks(**{k: model.stft_args[k] for k in ("n_filters", "kernel_size", "stride", "sample_rate")})
    rows = []
    for index in range(min(n_mixtures, len(dataset))):
        mixture, sources = dataset[index]
        with torch.no_grad():
            mix_tf = model.stft(mixture[None])
            embedding = model.masker.heads(mix_tf)["embedding"][0]  # [F, frames, D]
            source_mag = mag(model.stft(sources))  # [n_src, F, frames]
            dominant = source_mag.argmax(dim=0)
            active = ebased_vad(mag(mix_tf), vad_db)[0].bool()
            means = torch.stack([embedding[active & (dominant == c)].mean(dim=0) for c in range(len(sources))])
            nearer = torch.cdist(embedding.reshape(-1, embedding.shape[-1]), means).argmin(dim=1)
            left, _ = edge_padding(mixture.shape[-1], model.stft_args["kernel_size"], model.stft_args["stride"])

            def resynthesise(labels):  # one label per bin -> binary masks -> the n_src waveforms
                masks = torch.nn.functional.one_hot(labels, len(sources)).T.reshape(len(sources), *dominant.shape)
                return model.decoder(model.apply_masks(mix_tf, masks[None].float()))[0][
                    ..., left : left + mixture.shape[-1]]

            centroid_est = resynthesise(nearer)
            flat = embedding.reshape(-1, embedding.shape[-1]).double()
            weights = bin_weights(mag(mix_tf), vad_db, getattr(model.masker, "kmeans_weights", "vad"))[0]
            w = weights.reshape(-1).double()
            onehot = torch.nn.functional.one_hot(dominant.reshape(-1), len(sources)).double()
            gram = flat.T @ (flat * w[:, None])
            readout = torch.linalg.solve(gram + 1e-6 * gram.trace() * torch.eye(gram.shape[0], dtype=gram.dtype),
                                         flat.T @ (onehot * w[:, None]))
            linear_est = resynthesise((flat @ readout).argmax(dim=1))
            white_labels, _ = batched_kmeans(whiten(flat[None], w[None]), w[None], len(sources),
                                             n_init=getattr(model.masker, "kmeans_restarts", 3))
            whitened_est = resynthesise(white_labels[0])
            own = model(mixture[None])[0]
            p = torch.stack([(active & (dominant == c)).sum() for c in range(len(sources))]).double()
            p = p / p.sum().clamp(min=1)
            dc = deep_clustering_loss(embedding.reshape(1, -1, embedding.shape[-1]), dominant.reshape(1, -1),
                                      active.reshape(1, -1).float(), len(sources))
        refs, mix = sources.double().numpy(), mixture.double().numpy()
        ibm = oracle.estimates(mixture, sources, ["ibm"])["ibm"].double().numpy()
        rows.append({"kmeans": _best_si_sdri(refs, own.double().numpy(), mix),
                     "oracle_centroids": _best_si_sdri(refs, centroid_est.double().numpy(), mix),
                     "oracle_linear": _best_si_sdri(refs, linear_est.double().numpy(), mix),
                     "whitened_kmeans": _best_si_sdri(refs, whitened_est.double().numpy(), mix),
                     "ibm": _best_si_sdri(refs, ibm, mix), "dc_loss": float(dc),
                     "collapse_loss": float(1 - (p ** 2).sum())})
    return {key: round(float(np.mean([r[key] for r in rows])), 3) for key in rows[0]} | {"n_mixtures": len(rows)}


def overfit_one_batch(cfg, dataset, steps):
    torch.manual_seed(0)
    model, loss = build_model(cfg), make_loss(cfg)
    mixture, sources = (torch.stack(x) for x in zip(*(dataset[i] for i in range(int(cfg["training"]["batch_size"])))))
    optimizer = torch.optim.Adam(model.parameters(), lr=float(cfg["optim"]["lr"]))
    trace = []
    for step in range(steps):
        optimizer.zero_grad()
        value = loss(model, mixture, sources)
        value.backward()
        optimizer.step()
        if step % max(steps // 5, 1) == 0 or step == steps - 1:
            trace.append({"step": step, "loss": round(float(value.detach()), 4)})
    model.eval()
    with torch.no_grad():
        est = model(mixture)
    gains = [_best_si_sdri(s.double().numpy(), e.double().numpy(), m.double().numpy())
             for m, s, e in zip(mixture, sources, est)]
    return {"loss": trace, "si_sdri_on_the_batch": round(float(np.mean(gains)), 3)}


@exit_on_recipe_error
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--exp", required=True, help="a trained deep-clustering experiment, exp/<tag>")
    parser.add_argument("--data_root", default="data")
    parser.add_argument("--n_mixtures", type=int, default=100)
    parser.add_argument("--overfit_steps", type=int, default=200)
    parser.add_argument("--out", default="exp/benchmarks/dpcl_diagnostics.json")
    args = parser.parse_args(argv)
    exp = Path(args.exp)
    if not (exp / "conf.yml").is_file():
        raise RecipeError(f"{exp}/conf.yml not found: --exp takes a trained experiment folder (exp/<tag>)")
    cfg = read_frozen(exp / "conf.yml")
    data_dir = Path(args.data_root) / cfg["data"]["dataset"]
    root = load_sources(data_dir)[1]
    views = views_dir(data_dir, cfg["data"]["n_src"], cfg["data"]["n_classes"], cfg["data"]["mixing_policy"])
    model = load_model(exp / "best_model.pth")
    test = ViewDataset(views / "test.csv", root)
    result = {"exp": str(exp), **diagnose(model, test, args.n_mixtures, float(cfg["loss"]["vad_db"]))}
    torch.manual_seed(0)
    result["untrained"] = diagnose(build_model(cfg).eval(), test, args.n_mixtures, float(cfg["loss"]["vad_db"]))
    result["overfit_one_batch"] = overfit_one_batch(cfg, ViewDataset(views / "train.csv", root), args.overfit_steps)
    publish(result, args.out)


if __name__ == "__main__":
    main()

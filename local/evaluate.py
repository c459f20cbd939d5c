"""Stage 3: evaluate an experiment's best model on the test views.

Writes exp/<tag>/eval/: `metrics.csv` (one row per mixture: metrics averaged over its sources, the
input figures, the improvements and the permutation), `per_source.csv` (one row per source with its
label), `summary.json` (means, improvements SI-SDRi / SDRi, the oracle ideal-ratio-mask figures on
the same views, timings) and `examples/<mixture_id>/` (mixture, references and estimates as wav for
a few mixtures chosen with a fixed seed).

Metrics are Asteroid's `get_metrics` (SI-SDR, and SDR/SIR/SAR from pb_bss_eval's BSS-eval, STOI).
Estimates are first put in the order that maximises SI-SDR (Asteroid's PIT), so every metric, the
saved examples and the permutation column refer to the same assignment. With `--nj N` the metrics
(the slow part) run in N worker processes; results are identical to N = 1 (each mixture is scored
independently, and rows are written in view order).
"""
import hashlib
import json
import multiprocessing
import os
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from asteroid.losses import PITLossWrapper, pairwise_neg_sisdr
from asteroid.metrics import get_metrics

from local import io_utils
from local.dataset import ViewDataset
from local.errors import RecipeError
from local.models import load_model, n_sources
from local.oracle import OracleMasks


def best_permutation(estimates, sources):
    """(reordered estimates, permutation) maximising the mean SI-SDR; estimates/sources [n_src, T].
    `permutation[j]` is the estimate assigned to reference j."""
    pairwise = pairwise_neg_sisdr(estimates[None], sources[None])
    _, indices = PITLossWrapper.find_best_perm(pairwise)
    return PITLossWrapper.reorder_source(estimates[None], indices)[0], indices[0].tolist()


def score_mixture(job):
    """Metrics of one mixture (runs in a worker process): (index, mixture row, per-source rows)."""
    index, meta, mix, sources, estimates, oracle, sample_rate, metrics = job
    per_src = get_metrics(mix[None], sources, estimates, sample_rate=sample_rate, metrics_list=metrics, average=False)
    per_src = {key: np.broadcast_to(np.asarray(value, dtype=float).reshape(-1), (len(sources),))
               for key, value in per_src.items()}
    row = {"mixture_id": meta["mixture_id"], "labels": " ".join(meta["labels"]),
           "permutation": " ".join(map(str, meta["permutation"]))}
    row.update({key: float(np.mean(value)) for key, value in per_src.items()})
    for name in ("si_sdr", "sdr"):
        if name in per_src:
            row[name + "i"] = row[name] - row["input_" + name]
    if oracle is not None:
        irm = get_metrics(mix[None], sources, oracle, sample_rate=sample_rate, metrics_list=["si_sdr"], average=True)
        row["oracle_irm_si_sdr"] = float(irm["si_sdr"])
        row["oracle_irm_si_sdri"] = float(irm["si_sdr"] - irm["input_si_sdr"])
    src_rows = []
    for i, label in enumerate(meta["labels"]):
        src = {"mixture_id": meta["mixture_id"], "source": i, "label": label}
        src.update({key: float(value[i]) for key, value in per_src.items()})
        if "si_sdr" in per_src:
            src["si_sdri"] = src["si_sdr"] - src["input_si_sdr"]
        src_rows.append(src)
    return index, row, src_rows


def save_example(folder, mixture, sources, estimates, labels, sample_rate):
    io_utils.write_wav(folder / "mixture.wav", mixture.numpy(), sample_rate)
    for i, label in enumerate(labels):
        io_utils.write_wav(folder / f"s{i}_{label}.wav", sources[i].numpy(), sample_rate)
        io_utils.write_wav(folder / f"s{i}_{label}_estimate.wav", estimates[i].numpy(), sample_rate)


def file_sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class Progress:
    """Prints 'done/total, elapsed, time left' about ten times over a run."""

    def __init__(self, total):
        self.total, self.done, self.start = total, 0, time.time()
        self.every = max(1, total // 10)

    def step(self):
        self.done += 1
        if self.done % self.every == 0 or self.done == self.total:
            elapsed = time.time() - self.start
            left = elapsed / self.done * (self.total - self.done)
            print(f"  {self.done}/{self.total} mixtures, {elapsed:.0f} s elapsed, ~{left:.0f} s left", flush=True)


def _quiet_worker():
    warnings.simplefilter("ignore")  # mir_eval deprecation notices, once per mixture otherwise


def metric_pool(nj):
    """N fresh worker processes for the metrics, each with single-threaded BLAS: BSS-eval's solves
    are BLAS-bound, and N multi-threaded workers on N cores run slower than one (measured: 0.65 s vs
    0.28 s per mixture with 2 workers on 2 cores). Spawned, so the thread limit takes effect."""
    saved = {k: os.environ.get(k) for k in _THREAD_VARS}
    os.environ.update({k: "1" for k in _THREAD_VARS})
    try:
        pool = ProcessPoolExecutor(max_workers=nj, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_quiet_worker)
        # start the workers now, while the variables are set
        list(pool.map(int, range(nj)))
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return pool


_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
CHUNK = 32  # mixtures separated before their metrics are computed


def summarise(df, n_src, timings):
    numeric = df.select_dtypes("number")
    summary = {"n_mixtures": len(df), "n_src": n_src}
    summary.update({key: round(float(value), 4) for key, value in numeric.mean().items()})
    summary.update(timings)
    return summary


def evaluate(cfg, exp_dir, views, root, nj=1):
    exp_dir = Path(exp_dir)
    out_dir = exp_dir / "eval"
    model_path = exp_dir / "best_model.pth"
    if not model_path.is_file():
        raise RecipeError(f"{model_path} not found: train the experiment first (./run.sh --stage 2 --tag {cfg['tag']})")
    ecfg = cfg["eval"]
    model_hash = file_sha256(model_path)
    summary_path = out_dir / "summary.json"
    if summary_path.is_file():
        done = json.loads(summary_path.read_text())
        if done.get("model_sha256") == model_hash and done.get("eval_config") == ecfg:
            print(f"stage 3: {summary_path} is up to date for this model; skipped", flush=True)
            return done

    warnings.filterwarnings("ignore", message=".*mir_eval.*")
    model = load_model(model_path)
    dataset = ViewDataset(Path(views) / "test.csv", root, return_meta=True)
    if dataset.sample_rate != model.sample_rate or dataset.n_src != n_sources(model):
        raise RecipeError(f"{dataset.csv_path} has {dataset.n_src} sources at {dataset.sample_rate} Hz but the model "
                          f"separates {n_sources(model)} at {model.sample_rate} Hz")
    n = len(dataset) if ecfg["max_mixtures"] is None else min(len(dataset), int(ecfg["max_mixtures"]))
    oracle = OracleMasks(sample_rate=dataset.sample_rate, **cfg["filterbank"]) if ecfg["oracle"] else None
    rng = np.random.default_rng(int(ecfg["example_seed"]))
    example_ids = set(rng.choice(n, size=min(int(ecfg["n_examples"]), n), replace=False).tolist())
    print(f"stage 3: evaluating {exp_dir.name} on {n} test mixtures, metrics in {nj} process(es)", flush=True)

    rows, src_rows, progress = [None] * n, [], Progress(n)
    model_seconds, start = 0.0, time.time()
    pool = metric_pool(nj) if nj > 1 else None
    try:
        # Chunks alternate between the model (all cores, in this process) and the metrics (all cores, in
        # the pool), so the two never compete for the CPU, and memory stays bounded for long test sets.
        for first in range(0, n, CHUNK):
            jobs = []
            with torch.inference_mode():
                for index in range(first, min(n, first + CHUNK)):
                    mixture, sources, row = dataset[index]
                    t0 = time.time()
                    estimates = model(mixture[None])[0]
                    model_seconds += time.time() - t0
                    estimates, permutation = best_permutation(estimates, sources)
                    labels = [row[f"label_{i}"] for i in range(dataset.n_src)]
                    if index in example_ids:
                        save_example(out_dir / "examples" / row["mixture_id"], mixture, sources, estimates, labels,
                                     dataset.sample_rate)
                    irm = oracle.ideal_ratio_mask(mixture, sources).numpy() if oracle else None
                    meta = {"mixture_id": row["mixture_id"], "labels": labels, "permutation": permutation}
                    jobs.append((index, meta, mixture.numpy(), sources.numpy(), estimates.numpy(), irm,
                                 dataset.sample_rate, list(ecfg["metrics"])))
            for index, row, srows in (pool.map(score_mixture, jobs) if pool else map(score_mixture, jobs)):
                rows[index] = row
                src_rows.extend(srows)
                progress.step()
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)

    df = pd.DataFrame(rows)
    per_source = pd.DataFrame(src_rows)
    io_utils.write_csv(df, out_dir / "metrics.csv")
    io_utils.write_csv(per_source, out_dir / "per_source.csv")
    wall = time.time() - start
    summary = summarise(df, dataset.n_src, {"eval_seconds": round(wall, 1), "model_seconds": round(model_seconds, 1)})
    summary.update(tag=cfg["tag"], model=cfg["model"]["name"], model_sha256=model_hash, eval_config=ecfg,
                   examples=sorted(df["mixture_id"][sorted(example_ids)].tolist()))
    io_utils.write_json(summary, summary_path)
    report = ", ".join(f"{k} {summary[k]:.2f}" for k in ("si_sdr", "si_sdri", "sdr", "sdri", "oracle_irm_si_sdri")
                       if k in summary)
    print(f"stage 3: {report} (dB); wrote {out_dir}/summary.json in {wall:.0f} s", flush=True)
    return summary

"""Stage 3: evaluate an experiment's best model on the test views.

Writes exp/<tag>/eval/:
- `metrics.csv`: one row per mixture: metrics averaged over its sources, the input figures, the
  improvements, the permutation, the oracle masks' figures, and `max_overlap` (sources sounding at once);
- `per_source.csv`: one row per source with its label (and the oracle figures for that source);
- `per_category.csv` / `per_category.png`: means per label, worst first (which sounds are hard);
  `per_overlap.csv` where the number of overlapping sources varies;
- `summary.json`: means, SI-SDRi / SDRi, the oracle ideal ratio and binary masks on the same views,
  timings (model, oracle and metric seconds);
- `examples/<mixture_id>/`: mixture, references and estimates as wav, and `spectrograms.png`, for a few
  mixtures chosen with a fixed seed;
- `index.html`: all of it on one page that opens from disk.

Metrics are Asteroid's `get_metrics` (SI-SDR, SDR/SIR/SAR from pb_bss_eval's BSS-eval, STOI, and PESQ
for speech at 8 or 16 kHz, NaN for a source it cannot score). Estimates are first put in the order that maximises SI-SDR (Asteroid's PIT),
so every metric, example and the permutation column refer to the same assignment.

Mixtures go through the model in chunks; the metrics of a chunk run in `--nj` worker processes with
single-threaded BLAS (one worker with --nj 1, so that results are identical for every N). Each finished
chunk is saved under eval/.partial/; an interrupted evaluation re-run with the same model and settings
continues after the last finished chunk. Every file is written atomically.
"""
import hashlib
import json
import multiprocessing
import os
import shutil
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from asteroid.losses import PITLossWrapper, pairwise_neg_sisdr
from asteroid.metrics import get_metrics

from local.common import io_utils
from local.evaluation.breakdowns import max_overlap, per_category, per_overlap
from local.data.dataset import ViewDataset
from local.common.errors import RecipeError
from local.models import load_model, n_sources
from local.evaluation.oracle import ORACLES, OracleMasks

SPEECH_FORMATS = ("synth_speakers", "wsj0-2mix", "librimix")
PESQ_RATES = (8000, 16000)  # narrow band and wide band
CHUNK = 32  # mixtures separated before their metrics are computed


def best_permutation(estimates, sources):
    """(reordered estimates, permutation) maximising the mean SI-SDR; estimates/sources [n_src, T].
    `permutation[j]` is the estimate assigned to reference j."""
    pairwise = pairwise_neg_sisdr(estimates[None], sources[None])
    _, indices = PITLossWrapper.find_best_perm(pairwise)
    return PITLossWrapper.reorder_source(estimates[None], indices)[0], indices[0].tolist()


def metric_names(cfg):
    """eval.metrics, plus PESQ where the data is speech at 8 or 16 kHz (eval.pesq: auto)."""
    names = list(cfg["eval"]["metrics"])
    pesq = cfg["eval"]["pesq"]
    rate = int(cfg["data"]["sample_rate"])
    if pesq == "auto":
        pesq = cfg["data"]["format"] in SPEECH_FORMATS and rate in PESQ_RATES
    if pesq and rate not in PESQ_RATES:
        raise RecipeError(f"eval.pesq: PESQ is defined at 8 or 16 kHz, the data is at {rate} Hz; set eval.pesq false")
    return names + (["pesq"] if pesq and "pesq" not in names else [])


def pesq_scores(reference, estimates, sample_rate):
    """PESQ (ITU-T P.862; narrow band at 8 kHz, wide band at 16 kHz) of each estimate against its
    reference, NaN where PESQ finds no utterance to score, instead of failing the mixture (pb_bss_eval,
    behind get_metrics, scores all sources in one call and raises for any)."""
    import pesq

    mode = {8000: "nb", 16000: "wb"}[sample_rate]
    scores = [pesq.pesq(sample_rate, ref, est, mode, on_error=pesq.PesqError.RETURN_VALUES)
              for ref, est in zip(reference, estimates)]
    return np.array([s if s >= -0.5 else np.nan for s in scores], dtype=float)  # error codes are negative integers


def _per_source(mix, sources, estimates, sample_rate, metrics):
    """{metric: [n_src] array}: get_metrics for everything but PESQ, `pesq_scores` for PESQ."""
    plain = [m for m in metrics if m != "pesq"]
    values = get_metrics(mix[None], sources, estimates, sample_rate=sample_rate, metrics_list=plain, average=False)
    if "pesq" in metrics:
        values["input_pesq"] = pesq_scores(sources, np.broadcast_to(mix, sources.shape), sample_rate)
        values["pesq"] = pesq_scores(sources, estimates, sample_rate)
    return {key: np.broadcast_to(np.asarray(value, dtype=float).reshape(-1), (len(sources),))
            for key, value in values.items()}


def score_mixture(job):
    """Metrics of one mixture (runs in a worker process): (index, mixture row, per-source rows, seconds)."""
    start = time.process_time()
    meta, sources, sample_rate = job["meta"], job["sources"], job["sample_rate"]
    per_src = _per_source(job["mixture"], sources, job["estimates"], sample_rate, job["metrics"])
    for kind, estimates in job["oracles"].items():
        values = get_metrics(job["mixture"][None], sources, estimates, sample_rate=sample_rate, metrics_list=["si_sdr"],
                             average=False)
        per_src[f"oracle_{kind}_si_sdr"] = np.ravel(values["si_sdr"])
        per_src[f"oracle_{kind}_si_sdri"] = np.ravel(values["si_sdr"] - values["input_si_sdr"])
    for name in ("si_sdr", "sdr"):
        if name in per_src:
            per_src[name + "i"] = per_src[name] - per_src["input_" + name]
    src_rows = [{"mixture_id": meta["mixture_id"], "source": i, "label": label,
                 **{key: float(value[i]) for key, value in per_src.items()}} for i, label in enumerate(meta["labels"])]
    # the mixture's row: the mean over its sources of every figure (NaN if PESQ could not score one)
    row = {"mixture_id": meta["mixture_id"], "labels": " ".join(meta["labels"]),
           "permutation": " ".join(map(str, meta["permutation"])), "max_overlap": meta["max_overlap"],
           **{key: float(np.mean(value)) for key, value in per_src.items()}}
    return job["index"], row, src_rows, time.process_time() - start


def file_sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class Progress:
    """A progress bar line with the time left, printed after each chunk (readable in a log file too)."""

    def __init__(self, total, width=30):
        self.total, self.width, self.start, self.done_before = total, width, time.time(), 0

    def resumed(self, done):
        self.done_before = done

    def update(self, done):
        elapsed = time.time() - self.start
        rate = (done - self.done_before) / elapsed if elapsed > 0 else 0.0
        left = (self.total - done) / rate if rate > 0 else float("nan")
        filled = int(self.width * done / self.total)
        print(f"  [{'#' * filled}{'.' * (self.width - filled)}] {done}/{self.total} mixtures, {elapsed:.0f} s elapsed, "
              f"~{left:.0f} s left", flush=True)


def _quiet_worker():
    warnings.simplefilter("ignore")  # mir_eval deprecation notices, once per mixture otherwise


_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def metric_pool(nj):
    """N fresh worker processes for the metrics, each with single-threaded BLAS: BSS-eval's solves
    are BLAS-bound, and N multi-threaded workers on N cores run slower than one (measured: 0.65 s vs
    0.28 s per mixture with 2 workers on 2 cores). Spawned, so the thread limit takes effect."""
    saved = {k: os.environ.get(k) for k in _THREAD_VARS}
    os.environ.update({k: "1" for k in _THREAD_VARS})
    try:
        pool = ProcessPoolExecutor(max_workers=nj, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_quiet_worker)
        list(pool.map(int, range(nj)))  # start the workers now, while the variables are set
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return pool


class PartialResults:
    """eval/.partial/: one JSON per finished chunk, valid only for the fingerprint it was made with
    (model file, eval settings, test views), so a re-run continues an interrupted evaluation."""

    def __init__(self, folder, fingerprint):
        self.folder, self.fingerprint = Path(folder), fingerprint
        stamp = self.folder / "fingerprint.json"
        if stamp.is_file() and json.loads(stamp.read_text()) != fingerprint:
            shutil.rmtree(self.folder)
        if not stamp.is_file():
            io_utils.write_json(fingerprint, stamp)

    def _path(self, first):
        return self.folder / f"chunk{first:07d}.json"

    def load(self, first):
        path = self._path(first)
        return json.loads(path.read_text()) if path.is_file() else None

    def save(self, first, chunk):
        io_utils.write_json(chunk, self._path(first))

    def remove(self):
        shutil.rmtree(self.folder, ignore_errors=True)


def summarise(df, n_src, extra):
    numeric = df.drop(columns=["max_overlap"]).select_dtypes("number")
    summary = {"n_mixtures": len(df), "n_src": n_src}
    summary.update({key: round(float(value), 4) for key, value in numeric.mean().items() if not pd.isna(value)})
    summary.update(extra)
    return summary


def example_sounds(folder, labels):
    """[(caption, wav path)] of an example: the mixture, then each reference and its estimate."""
    sounds = [("mixture", folder / "mixture.wav")]
    for i, label in enumerate(labels):
        sounds += [(f"reference {i}: {label}", folder / f"s{i}_{label}.wav"),
                   (f"estimate {i}: {label}", folder / f"s{i}_{label}_estimate.wav")]
    return sounds


def save_example(folder, mixture, sources, estimates, labels, sample_rate, filterbank, masks):
    """The wavs and the spectrogram figure of one example."""
    from local.evaluation.pages import example_figure

    signals = [mixture] + [x for pair in zip(sources, estimates) for x in pair]
    for (_, path), signal in zip(example_sounds(folder, labels), signals):
        io_utils.write_wav(path, signal.numpy(), sample_rate)
    example_figure(folder / "spectrograms.png", mixture.numpy(), sources.numpy(), estimates.numpy(), labels,
                   sample_rate, n_fft=int(filterbank["n_filters"]), hop=int(filterbank["stride"]), masks=masks)


def evaluate(cfg, exp_dir, views, root, nj=1, out_dir=None):
    exp_dir = Path(exp_dir)
    out_dir = Path(out_dir) if out_dir else exp_dir / "eval"
    model_path = exp_dir / "best_model.pth"
    if not model_path.is_file():
        raise RecipeError(f"{model_path} not found: train the experiment first (./run.sh --stage 2 --tag {cfg['tag']})")
    ecfg = cfg["eval"]
    test_csv = Path(views) / "test.csv"
    metrics = metric_names(cfg)
    fingerprint = {"model_sha256": file_sha256(model_path), "eval_config": ecfg, "metrics": metrics,
                   "filterbank": cfg["filterbank"], "chunk": CHUNK,
                   "test_views_sha256": file_sha256(test_csv) if test_csv.is_file() else None}
    summary_path = out_dir / "summary.json"
    if summary_path.is_file():
        done = json.loads(summary_path.read_text())
        if all(done.get(key) == value for key, value in fingerprint.items()):
            print(f"stage 3: {summary_path} is up to date for this model; skipped", flush=True)
            return done

    warnings.filterwarnings("ignore", message=".*mir_eval.*")
    model = load_model(model_path)
    dataset = ViewDataset(test_csv, root, return_meta=True)
    if dataset.sample_rate != model.sample_rate or dataset.n_src != n_sources(model):
        raise RecipeError(f"{dataset.csv_path} has {dataset.n_src} sources at {dataset.sample_rate} Hz but the model "
                          f"separates {n_sources(model)} at {model.sample_rate} Hz")
    n = len(dataset) if ecfg["max_mixtures"] is None else min(len(dataset), int(ecfg["max_mixtures"]))
    oracle = OracleMasks(sample_rate=dataset.sample_rate, **cfg["filterbank"]) if ecfg["oracle"] else None
    rng = np.random.default_rng(int(ecfg["example_seed"]))
    example_ids = set(rng.choice(n, size=min(int(ecfg["n_examples"]), n), replace=False).tolist())
    partial = PartialResults(out_dir / ".partial", fingerprint)
    print(f"stage 3: evaluating {exp_dir.name} on {n} test mixtures ({', '.join(metrics)}), metrics in {nj} "
          f"process(es)", flush=True)

    rows, src_rows, progress = [None] * n, [], Progress(n)
    seconds = {"model_seconds": 0.0, "oracle_seconds": 0.0, "metric_seconds": 0.0}
    start, resumed = time.time(), 0
    pool = metric_pool(nj)
    try:
        # Chunks alternate between the model (all cores, in this process) and the metrics (all cores, in
        # the pool), so the two never compete for the CPU, and memory stays bounded for long test sets.
        for first in range(0, n, CHUNK):
            chunk = partial.load(first)
            if chunk is None:
                chunk = _evaluate_chunk(model, dataset, range(first, min(n, first + CHUNK)), oracle, example_ids,
                                        metrics, cfg["filterbank"], out_dir, pool)
                partial.save(first, chunk)
            else:
                resumed = min(n, first + CHUNK)
                progress.resumed(resumed)
            for index, row in zip(range(first, n), chunk["rows"]):
                rows[index] = row
            src_rows.extend(chunk["source_rows"])
            for key in seconds:
                seconds[key] += chunk["seconds"][key]
            progress.update(min(n, first + CHUNK))
    finally:
        pool.shutdown(cancel_futures=True)
    if resumed:
        print(f"stage 3: continued an interrupted evaluation: the first {resumed} mixtures came from {partial.folder}",
              flush=True)
    return _write_results(cfg, out_dir, pd.DataFrame(rows), pd.DataFrame(src_rows), dataset, example_ids,
                          fingerprint, seconds, time.time() - start, partial)


def _evaluate_chunk(model, dataset, indices, oracle, example_ids, metrics, filterbank, out_dir, pool):
    """Separate a chunk of mixtures here, score them in the pool: {rows, source_rows, seconds}."""
    from local.evaluation.pages import model_masks

    jobs, seconds = [], {"model_seconds": 0.0, "oracle_seconds": 0.0}
    with torch.inference_mode():
        for index in indices:
            mixture, sources, view = dataset[index]
            t0 = time.time()
            estimates = model(mixture[None])[0]
            seconds["model_seconds"] += time.time() - t0
            estimates, permutation = best_permutation(estimates, sources)
            labels = [view[f"label_{i}"] for i in range(dataset.n_src)]
            t0 = time.time()
            oracles = {kind: oracle.estimates(mixture, sources, kind).numpy() for kind in ORACLES} if oracle else {}
            seconds["oracle_seconds"] += time.time() - t0
            if index in example_ids:
                save_example(out_dir / "examples" / view["mixture_id"], mixture, sources, estimates, labels,
                             dataset.sample_rate, filterbank, model_masks(model, mixture, permutation))
            meta = {"mixture_id": view["mixture_id"], "labels": labels, "permutation": permutation,
                    "max_overlap": max_overlap(sources.numpy())}
            jobs.append({"index": index, "meta": meta, "mixture": mixture.numpy(), "sources": sources.numpy(),
                         "estimates": estimates.numpy(), "oracles": oracles, "sample_rate": dataset.sample_rate,
                         "metrics": metrics})
    rows, source_rows, metric_seconds = [], [], 0.0
    for _, row, srows, spent in pool.map(score_mixture, jobs):
        rows.append(row)
        source_rows.extend(srows)
        metric_seconds += spent
    return {"rows": rows, "source_rows": source_rows, "seconds": {**seconds, "metric_seconds": metric_seconds}}


def _write_results(cfg, out_dir, df, per_source, dataset, example_ids, fingerprint, seconds, wall, partial):
    from local.evaluation.pages import category_figure, write_index

    io_utils.write_csv(df, out_dir / "metrics.csv")
    io_utils.write_csv(per_source, out_dir / "per_source.csv")
    categories = per_category(per_source)
    io_utils.write_csv(categories, out_dir / "per_category.csv")
    category_figure(categories, out_dir / "per_category.png", f"{cfg['tag']}: SI-SDRi per category")
    overlap = per_overlap(df)
    if overlap is not None:
        io_utils.write_csv(overlap, out_dir / "per_overlap.csv")
    timings = {"eval_seconds": round(wall, 2), **{k: round(v, 3) for k, v in seconds.items()}}
    summary = summarise(df, dataset.n_src, timings)
    if "pesq" in per_source.columns:  # the mean leaves out what PESQ could not score: say how many
        summary["pesq_unscored_sources"] = int(per_source["pesq"].isna().sum())
    examples = sorted(df["mixture_id"][sorted(example_ids)].tolist())
    summary.update(tag=cfg["tag"], model=cfg["model"]["name"], examples=examples, **fingerprint)
    labels = {m: group.sort_values("source")["label"].astype(str).tolist() for m, group in per_source.groupby("mixture_id")}
    sounds = [(m, out_dir / "examples" / m / "spectrograms.png", example_sounds(out_dir / "examples" / m, labels[m]))
              for m in examples]
    write_index(out_dir, summary, categories, overlap, sounds)
    io_utils.write_json(summary, out_dir / "summary.json")  # last: its presence means the evaluation is complete
    partial.remove()
    report = ", ".join(f"{k} {summary[k]:.2f}" for k in ("si_sdr", "si_sdri", "sdr", "sdri", "pesq", "oracle_irm_si_sdri",
                                                          "oracle_ibm_si_sdri") if k in summary)
    print(f"stage 3: {report}; wrote {out_dir}/summary.json and {out_dir}/index.html in {wall:.0f} s", flush=True)
    return summary

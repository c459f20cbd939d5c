"""Stage 3: evaluate an experiment's best model on the test views.

Writes exp/<tag>/eval/:
- `metrics.csv`: one row per mixture: metrics averaged over its sources, the input figures, the
  improvements, the permutation, the oracle masks' figures, and `overlap_seconds` (how long
  all its sources sound at once, local/data/activity.py);
- `per_source.csv`: one row per source with its label (and the oracle figures for that source);
- `per_category.csv` / `per_category.png`: means per label, worst first (which sounds are hard);
  `per_overlap.csv` per bin of overlap where it varies;
- `summary.json`: means over sources, SI-SDRi / SDRi with bootstrap 95 % confidence intervals, the oracle
  masks on the same views, the bound that applies to the model and its share of it, timings;
- `examples/<mixture_id>/`: mixture, references and estimates as wav, and `spectrograms.png`, for a few
  mixtures chosen with a fixed seed;
- `index.html`: all of it on one page that opens from disk.

Metrics are local/evaluation/metrics.py (SI-SDR; SDR/SIR/SAR by fast_bss_eval or pb_bss_eval; STOI and
PESQ for speech). Estimates are first put in the order that maximises SI-SDR (Asteroid's PIT), and every
metric, example and the permutation column refer to that one assignment. A model trained in a fixed order
(`loss.pit: false`) also gets its fixed-order SI-SDRi and the share of mixtures whose best assignment is not
its own order, so that slot errors are visible.

Mixtures go through the model in chunks; the metrics of a chunk run in `--nj` worker processes with
single-threaded BLAS (with --nj 1 in this process, also single-threaded, so that results are identical for
every N). Each finished
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

from local.common import io_utils, seeding
from local.common.errors import RecipeError
from local.data import activity
from local.data.dataset import ViewDataset
from local.evaluation.breakdowns import overlap_seconds, per_category, per_overlap
from local.evaluation.metrics import BSS_BACKENDS, PESQ_RATES, si_sdr, source_metrics
from local.evaluation.oracle import OracleMasks, bound_for
from local.evaluation.uncertainty import bootstrap_ci
from local.models import load_model, n_sources
from local.models.card import publish

SPEECH_FORMATS = ("synth_speakers", "wsj0-2mix", "librimix")
CHUNK = 32  # mixtures separated before their metrics are computed
MODEL_BATCH = 8  # mixtures per forward pass


def best_permutation(estimates, sources):
    """(reordered estimates, permutation) maximising the mean SI-SDR; estimates/sources [n_src, T].
    `permutation[j]` is the estimate assigned to reference j."""
    pairwise = pairwise_neg_sisdr(estimates[None], sources[None])
    _, indices = PITLossWrapper.find_best_perm(pairwise)
    return PITLossWrapper.reorder_source(estimates[None], indices)[0], indices[0].tolist()


def _speech_metric(cfg, name):
    """eval.stoi / eval.pesq: true, false, or auto (= the data is speech)."""
    value = cfg["eval"][name]
    return cfg["data"]["format"] in SPEECH_FORMATS if value == "auto" else bool(value)


def metric_names(cfg):
    """eval.metrics (SI-SDR always), plus STOI and PESQ where the data is speech (eval.stoi/pesq: auto)."""
    names = ["si_sdr"] + [m for m in cfg["eval"]["metrics"] if m != "si_sdr"]
    rate = int(cfg["data"]["sample_rate"])
    pesq = _speech_metric(cfg, "pesq") and (cfg["eval"]["pesq"] is True or rate in PESQ_RATES)
    if pesq and rate not in PESQ_RATES:
        raise RecipeError(f"eval.pesq: PESQ is defined at 8 or 16 kHz, the data is at {rate} Hz; set eval.pesq false")
    return names + ["stoi"] * _speech_metric(cfg, "stoi") + ["pesq"] * pesq


def _mean(values):
    """Mean over the finite values (NaN if none): a source PESQ could not score does not void its mixture."""
    values = np.asarray(values, dtype=float)
    return float(values[~np.isnan(values)].mean()) if (~np.isnan(values)).any() else float("nan")


def score_mixture(job):
    """Metrics of one mixture (runs in a worker process): (index, mixture row, per-source rows, seconds)."""
    start = time.process_time()
    meta, sources = job["meta"], job["sources"]
    per_src = source_metrics(job["mixture"], sources, job["estimates"], job["sample_rate"], job["metrics"],
                             job["backend"])
    for name in ("si_sdr", "sdr"):
        if name in per_src:
            per_src[name + "i"] = per_src[name] - per_src["input_" + name]
    if job["fixed_order"] is not None:  # the model's own output order, before the PIT reassignment
        per_src["fixed_order_si_sdri"] = si_sdr(sources, job["fixed_order"]) - per_src["input_si_sdr"]
    for kind, estimates in job["oracles"].items():
        per_src[f"oracle_{kind}_si_sdr"] = si_sdr(sources, estimates)
        per_src[f"oracle_{kind}_si_sdri"] = per_src[f"oracle_{kind}_si_sdr"] - per_src["input_si_sdr"]
    src_rows = [{"mixture_id": meta["mixture_id"], "source": i, "label": label,
                 **{key: float(value[i]) for key, value in per_src.items()}} for i, label in enumerate(meta["labels"])]
    # the mixture's row: the mean over its sources of every figure (over the scored ones for PESQ)
    row = {"mixture_id": meta["mixture_id"], "labels": " ".join(meta["labels"]),
           "permutation": " ".join(map(str, meta["permutation"])), "overlap_seconds": meta["overlap_seconds"],
           **{key: _mean(value) for key, value in per_src.items()}}
    if job["fixed_order"] is not None:
        row["permuted"] = int(meta["permutation"] != sorted(meta["permutation"]))
    return job["index"], row, src_rows, time.process_time() - start


def loss_domain(cfg):
    """What the training objective compared: waveforms (SI-SDR), embeddings (deep clustering) or the
    spectrogram domain of a spectrogram loss; the report shows it so that cells with different objectives
    are not compared silently."""
    name = cfg["loss"]["name"]
    if name == "sisdr":
        return "waveform"
    if name == "deep_clustering":
        return f"embedding ({cfg['loss']['dc']})"
    return cfg["loss"]["domain"]


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


class InProcess:
    """The metrics of --nj 1, in this process but with one BLAS and one torch thread, as in the workers of
    `metric_pool`: the same kernels give the same figures for every --nj, without spawning a worker
    (whose start, importing torch, costs seconds)."""

    def map(self, function, jobs):
        import torch
        from threadpoolctl import threadpool_limits

        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with threadpool_limits(limits=1), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return [function(job) for job in jobs]
        finally:
            torch.set_num_threads(threads)

    def shutdown(self, **_):
        pass


def metric_pool(nj):
    """N fresh worker processes for the metrics, each with single-threaded BLAS: BSS-eval's solves
    are BLAS-bound, and N multi-threaded workers on N cores run slower than one (measured: 0.65 s vs
    0.28 s per mixture with 2 workers on 2 cores). Spawned, so the thread limit takes effect.
    With one job, the metrics run in this process (`InProcess`)."""
    if nj == 1:
        return InProcess()
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


def summarise(df, per_source, n_src, ecfg, bound):
    """Means over all sources (PESQ over the sources it scored), the bootstrap 95 % intervals of the mean
    SI-SDRi and SDRi (resampling test mixtures, the unit of independence), and the model's bound."""
    numeric = per_source.drop(columns=["source"]).select_dtypes("number")
    summary = {"n_mixtures": len(df), "n_src": n_src}
    summary.update({key: round(float(value), 4) for key, value in numeric.mean().items() if not pd.isna(value)})
    for key in ("si_sdri", "sdri"):
        if key in df:
            low, high = bootstrap_ci(df[key].to_numpy(), int(ecfg["bootstrap"]), int(ecfg["bootstrap_seed"]))
            summary[f"{key}_ci95"] = [round(low, 4), round(high, 4)]
    if "overlap_seconds" in df:  # mixtures whose sources never sound together inflate a mean: say how many
        summary["overlap_shares"] = activity.overlap_shares(df["overlap_seconds"])
        overlapping = df[df["overlap_seconds"] > 0]
        summary["n_overlapping"] = int(len(overlapping))
        if "si_sdri" in df:
            summary["si_sdri_median"] = round(float(df["si_sdri"].median()), 4)
            summary["si_sdri_overlapping"] = (round(float(overlapping["si_sdri"].mean()), 4) if len(overlapping)
                                              else None)
    if "permuted" in df:
        summary["permuted_share"] = round(float(df["permuted"].mean()), 4)
    summary["bound"] = bound
    if bound and f"oracle_{bound}_si_sdri" in summary:
        summary["bound_si_sdri"] = summary[f"oracle_{bound}_si_sdri"]
        summary["share_of_bound"] = round(summary["si_sdri"] / summary["bound_si_sdri"], 4)
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


def evaluate(cfg, exp_dir, views, root, nj=1, out_dir=None, split="test"):
    """Stage 3 on the `split` views (test; a sweep selects its configurations on val, local/sweep.py)."""
    exp_dir = Path(exp_dir)
    out_dir = Path(out_dir) if out_dir else exp_dir / "eval"
    model_path = exp_dir / "best_model.pth"
    if not model_path.is_file():
        raise RecipeError(f"{model_path} not found: train the experiment first (./run.sh --stage 2 --tag {cfg['tag']})")
    ecfg = cfg["eval"]
    if ecfg["bss_backend"] not in BSS_BACKENDS:
        raise RecipeError(f"eval.bss_backend must be one of {', '.join(BSS_BACKENDS)}, got {ecfg['bss_backend']!r}")
    test_csv = Path(views) / f"{split}.csv"
    metrics = metric_names(cfg)
    fixed_order = not cfg["loss"]["pit"] and cfg["loss"]["name"] != "deep_clustering"
    fingerprint = {"model_sha256": file_sha256(model_path), "eval_config": ecfg, "metrics": metrics,
                   "fixed_order": fixed_order,
                   "filterbank": cfg["filterbank"], "chunk": CHUNK,
                   "test_views_sha256": file_sha256(test_csv) if test_csv.is_file() else None}
    if cfg["loss"]["name"] == "query_sisdr":  # what a query model's stage 3 scores: a summary of fewer is redone
        from local.evaluation.query_eval import QUERY_SCORES

        fingerprint["query_scores"] = list(QUERY_SCORES)
    summary_path = out_dir / "summary.json"
    if summary_path.is_file():
        done = json.loads(summary_path.read_text())
        if all(done.get(key) == value for key, value in fingerprint.items()):
            print(f"stage 3: {summary_path} is up to date for this model; skipped", flush=True)
            if split == "test" and out_dir == exp_dir / "eval" and not (exp_dir / "publish" / "model.pth").is_file():
                _publish_card(model_path, done, cfg)  # a card lost or never written (an interrupted stage 3)
            return done

    warnings.filterwarnings("ignore", message=".*mir_eval.*")
    model = load_model(model_path)
    if getattr(model, "queried", False):  # extraction of the sound a label names: scored per query
        from local.evaluation.query_eval import evaluate_queries

        return evaluate_queries(cfg, exp_dir, model, test_csv, root, out_dir, fingerprint)
    dataset = ViewDataset(test_csv, root, return_meta=True)
    if dataset.sample_rate != model.sample_rate or dataset.n_src != n_sources(model):
        raise RecipeError(f"{dataset.csv_path} has {dataset.n_src} sources at {dataset.sample_rate} Hz but the model "
                          f"separates {n_sources(model)} at {model.sample_rate} Hz")
    n = len(dataset) if ecfg["max_mixtures"] is None else min(len(dataset), int(ecfg["max_mixtures"]))
    oracle = OracleMasks(sample_rate=dataset.sample_rate, **cfg["filterbank"]) if ecfg["oracle"] else None
    rng = seeding.stream("examples", ecfg["example_seed"])
    example_ids = set(rng.choice(n, size=min(int(ecfg["n_examples"]), n), replace=False).tolist())
    partial = PartialResults(out_dir / ".partial", fingerprint)
    print(f"stage 3: evaluating {exp_dir.name} on {n} {split} mixtures ({', '.join(metrics)}), metrics in {nj} "
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
                                        metrics, ecfg["bss_backend"], fixed_order, cfg["filterbank"], out_dir, pool)
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
    summary = _write_results(cfg, out_dir, pd.DataFrame(rows), pd.DataFrame(src_rows), dataset, example_ids,
                             fingerprint, seconds, time.time() - start, partial, bound_for(model))
    if split == "test" and out_dir == exp_dir / "eval":  # the card Asteroid publishes, with its test metrics
        _publish_card(model_path, summary, cfg)
    return summary


def _publish_card(model_path, summary, cfg):
    figures = {k: v for k, v in summary.items()
               if (isinstance(v, (int, float)) and not isinstance(v, bool)) or k.endswith("_ci95")}
    published = publish(model_path, figures, cfg, f"listener/{cfg['data']['dataset']}/{cfg['tag']}")
    if published:
        print(f"stage 3: wrote the model card with these metrics: {published}", flush=True)


def _evaluate_chunk(model, dataset, indices, oracle, example_ids, metrics, backend, fixed_order, filterbank, out_dir,
                    pool):
    """Separate a chunk of mixtures here, score them in the pool: {rows, source_rows, seconds}."""
    from local.evaluation.pages import model_masks

    jobs, seconds = [], {"model_seconds": 0.0, "oracle_seconds": 0.0}
    with torch.inference_mode():
        items = [dataset[index] for index in indices]
        t0 = time.time()
        # Batches of MODEL_BATCH when the chunk's mixtures have one length (fixed-length views); else one by one.
        if len({len(mixture) for mixture, _, _ in items}) == 1:
            mixtures = torch.stack([mixture for mixture, _, _ in items])
            outputs = [out for batch in mixtures.split(MODEL_BATCH) for out in model(batch)]
        else:
            outputs = [model(mixture[None])[0] for mixture, _, _ in items]
        seconds["model_seconds"] += time.time() - t0
        for index, (mixture, sources, view), output in zip(indices, items, outputs):
            estimates, permutation = best_permutation(output, sources)
            labels = [view[f"label_{i}"] for i in range(dataset.n_src)]
            t0 = time.time()
            oracles = {kind: est.numpy() for kind, est in oracle.estimates(mixture, sources).items()} if oracle else {}
            seconds["oracle_seconds"] += time.time() - t0
            if index in example_ids:
                save_example(out_dir / "examples" / view["mixture_id"], mixture, sources, estimates, labels,
                             dataset.sample_rate, filterbank, model_masks(model, mixture, permutation))
            meta = {"mixture_id": view["mixture_id"], "labels": labels, "permutation": permutation,
                    "overlap_seconds": overlap_seconds(sources.numpy(), dataset.sample_rate)}
            jobs.append({"index": index, "meta": meta, "mixture": mixture.numpy(), "sources": sources.numpy(),
                         "estimates": estimates.numpy(), "oracles": oracles, "sample_rate": dataset.sample_rate,
                         "metrics": metrics, "backend": backend,
                         "fixed_order": output.numpy() if fixed_order else None})
    rows, source_rows, metric_seconds = [], [], 0.0
    for _, row, srows, spent in pool.map(score_mixture, jobs):
        rows.append(row)
        source_rows.extend(srows)
        metric_seconds += spent
    return {"rows": rows, "source_rows": source_rows, "seconds": {**seconds, "metric_seconds": metric_seconds}}


def _write_results(cfg, out_dir, df, per_source, dataset, example_ids, fingerprint, seconds, wall, partial, bound):
    from local.evaluation.curves import curves_figure
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
    summary = summarise(df, per_source, dataset.n_src, cfg["eval"], bound)
    summary.update(timings)
    if "pesq" in per_source.columns:  # the mean leaves out what PESQ could not score: say how many
        summary["pesq_unscored_sources"] = int(per_source["pesq"].isna().sum())
    examples = sorted(df["mixture_id"][sorted(example_ids)].tolist())
    summary.update(evaluated_at=time.strftime("%Y-%m-%d %H:%M:%S"), tag=cfg["tag"], model=cfg["model"]["name"],
                   loss=cfg["loss"]["name"], loss_domain=loss_domain(cfg),
                   n_classes=cfg["data"].get("n_classes"), mixing_policy=cfg["data"].get("mixing_policy", "t0"),
                   examples=examples, **fingerprint)
    labels = {m: group.sort_values("source")["label"].astype(str).tolist()
              for m, group in per_source.groupby("mixture_id")}
    sounds = [(m, out_dir / "examples" / m / "spectrograms.png", example_sounds(out_dir / "examples" / m, labels[m]))
              for m in examples]
    curves = curves_figure(Path(out_dir).parent, out_dir / "curves.png", f"{cfg['tag']}: training")
    write_index(out_dir, summary, categories, overlap, sounds, curves)
    io_utils.write_json(summary, out_dir / "summary.json")  # last: its presence means the evaluation is complete
    partial.remove()
    report = ", ".join(f"{k} {summary[k]:.2f}" for k in ("si_sdr", "si_sdri", "sdr", "sdri", "pesq",
                                                          "oracle_ratio_si_sdri", "oracle_ibm_si_sdri",
                                                          "oracle_psm_si_sdri") if k in summary)
    if "si_sdri_ci95" in summary:
        report += " (SI-SDRi 95 %% CI %.2f to %.2f)" % tuple(summary["si_sdri_ci95"])
    print(f"stage 3: {report}; wrote {out_dir}/summary.json and {out_dir}/index.html in {wall:.0f} s", flush=True)
    return summary

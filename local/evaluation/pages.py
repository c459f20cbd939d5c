"""What a researcher looks at after stage 3: spectrogram figures and one HTML page per experiment.

- `example_figure`: for a saved example, the mixture, each reference and its estimate as log-magnitude
  spectrograms (same colour scale), plus the estimated mask for STFT models.
- `category_figure`: mean SI-SDRi per category with the oracle masks' next to it.
- `write_index`: exp/<tag>/eval/index.html with the summary table, the breakdowns, the figures and audio
  players for the examples. Every reference is a relative path inside eval/, so the page opens from
  disk (file://) in any browser, with no server, and moves with the folder.
"""
import html
import os
from pathlib import Path
from urllib.parse import quote

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from local.common import io_utils  # noqa: E402

# summary.json keys shown at the top of the page, with their labels
SUMMARY_FIGURES = [("si_sdr", "SI-SDR"), ("si_sdri", "SI-SDRi"), ("sdr", "SDR"), ("sdri", "SDRi"), ("sir", "SIR"),
                   ("sar", "SAR"), ("stoi", "STOI"), ("pesq", "PESQ"), ("input_si_sdr", "input SI-SDR"),
                   ("fixed_order_si_sdri", "SI-SDRi in the model's own order"),
                   ("permuted_share", "share of mixtures whose best order is not the model's"),
                   ("oracle_psm_si_sdri", "oracle truncated phase-sensitive mask SI-SDRi"),
                   ("oracle_ibm_si_sdri", "oracle binary mask SI-SDRi"),
                   ("oracle_ratio_si_sdri", "oracle ratio mask SI-SDRi (not a bound)"),
                   ("share_of_bound", "share of the model's bound")]
# what each bound means, for the sentence under the table
BOUND_NAMES = {"psm": "the truncated phase-sensitive mask (bounds real masks in [0, 1])",
               "ibm": "the ideal binary mask (bounds a hard assignment of bins, as k-means)"}


def log_spectrogram(wav, n_fft, hop):
    window = torch.hann_window(n_fft)
    spec = torch.stft(torch.as_tensor(wav), n_fft, hop_length=hop, window=window, return_complex=True).abs()
    return 20 * torch.log10(spec + 1e-8).numpy()


def model_masks(model, mixture, permutation):
    """The masks an STFT model applies, in reference order [n_src, F, frames] (magnitudes of complex
    masks; deep clustering's binary k-means assignments), or None for learned-filterbank models."""
    from asteroid_filterbanks.transforms import mag

    from local.models.stft_masker import STFTMasker

    if not isinstance(model, STFTMasker):
        return None
    with torch.inference_mode():
        masks = model.masker(model.stft(mixture[None]))[0]  # [n_src, F or 2F, frames]
    if model.mask_type == "complex":
        masks = mag(masks, dim=-2)
    return masks[permutation].numpy()


def example_figure(path, mixture, sources, estimates, labels, sample_rate, n_fft, hop, masks=None):
    """One PNG: the mixture, then per source its reference, its estimate and (if any) its mask."""
    spectra = [log_spectrogram(x, n_fft, hop) for x in [mixture, *sources, *estimates]]
    top = max(s.max() for s in spectra)
    scale = dict(vmin=top - 80, vmax=top, origin="lower", aspect="auto", cmap="magma",
                 extent=[0, len(mixture) / sample_rate, 0, sample_rate / 2000])
    n_src, columns = len(sources), 3 if masks is not None else 2
    # shared axes: the tick labels of the outer panels only (text rendering is most of a figure's cost)
    fig, axes = plt.subplots(n_src + 1, columns, figsize=(4 * columns, 2.2 * (n_src + 1)), squeeze=False,
                             sharex=True, sharey=True)
    for ax in axes.flat:
        ax.set_visible(False)
    axes[0, 0].set_visible(True)
    axes[0, 0].imshow(spectra[0], **scale)
    axes[0, 0].set_title("mixture", fontsize=9)
    for i, label in enumerate(labels):
        panels = [(spectra[1 + i], f"reference {i}: {label}"), (spectra[1 + n_src + i], f"estimate {i}")]
        for j, (spec, title) in enumerate(panels):
            axes[i + 1, j].set_visible(True)
            axes[i + 1, j].imshow(spec, **scale)
            axes[i + 1, j].set_title(title, fontsize=9)
        if masks is not None:
            axes[i + 1, 2].set_visible(True)
            axes[i + 1, 2].imshow(masks[i], origin="lower", aspect="auto", cmap="viridis", vmin=0, vmax=1,
                                  extent=scale["extent"])
            axes[i + 1, 2].set_title(f"mask {i}", fontsize=9)
    for ax in axes.flat:
        if ax.get_visible():
            ax.tick_params(labelsize=7, labelbottom=ax is axes[-1, 0] or ax is axes[0, 0],
                           labelleft=ax in axes[:, 0])
    axes[-1, 0].set_xlabel("s", fontsize=8)
    axes[-1, 0].set_ylabel("kHz", fontsize=8)
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.08, top=0.94, wspace=0.25, hspace=0.7)  # tight_layout: 0.5 s
    with io_utils.atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)


def category_figure(table, path, title):
    """Bars of mean SI-SDRi per category, the oracle masks' beside them."""
    series = [c for c in ("si_sdri", "oracle_psm_si_sdri", "oracle_ibm_si_sdri", "oracle_ratio_si_sdri")
              if c in table.columns]
    x = np.arange(len(table))
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(table) + 2), 3.5))
    for k, column in enumerate(series):
        ax.bar(x + (k - (len(series) - 1) / 2) * width, table[column], width, label=column)
    ax.set_xticks(x, table["label"], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("dB")
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with io_utils.atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)


def _table(df):
    cell = lambda v: f"{v:.2f}" if isinstance(v, float) else html.escape(str(v))
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in df.itertuples(index=False))
    return f"<table><tr>{head}</tr>{body}</table>"


def _audio(rel, label):
    return (f'<figure><figcaption>{html.escape(label)}</figcaption>'
            f'<audio controls preload="none" src="{html.escape(rel)}"></audio></figure>')


def write_index(eval_dir, summary, categories, overlap, examples, curves=None):
    """eval_dir/index.html. `examples`: [(mixture_id, figure path or None, [(label, wav path)])]; `curves`: the
    training curves' figure (local/evaluation/curves.py) or None."""
    eval_dir = Path(eval_dir)
    rel = lambda p: quote(Path(os.path.relpath(p, eval_dir)).as_posix())  # labels may hold spaces, '#', '%'...
    ci = lambda key: (f" [{summary[key + '_ci95'][0]:.2f}, {summary[key + '_ci95'][1]:.2f}]"
                      if key + "_ci95" in summary else "")
    figures = [(label, f"{summary[key]:.2f}{ci(key)}") for key, label in SUMMARY_FIGURES if key in summary]
    bound = summary.get("bound")
    bound_text = (f"The bound that applies to this model is {BOUND_NAMES[bound]}." if bound in BOUND_NAMES else
                  "No oracle mask bounds this model (complex masks or a learned basis).")
    parts = [
        f"<h1>{html.escape(summary['tag'])}</h1>",
        f"<p>model <b>{html.escape(summary['model'])}</b>, {summary['n_mixtures']} test mixtures of "
        f"{summary['n_src']} sources; dB except STOI, PESQ and shares; [95 % bootstrap interval over test mixtures]. "
        f"Trained on a {html.escape(str(summary.get('loss', '')))} loss in the "
        f"{html.escape(str(summary.get('loss_domain', '')))} domain. {bound_text} "
        f"Evaluated in {summary['eval_seconds']} s. "
        f'Per-mixture rows: <a href="metrics.csv">metrics.csv</a>, per source: '
        f'<a href="per_source.csv">per_source.csv</a>.</p>',
        "<table>" + "".join(f"<tr><th>{html.escape(k)}</th><td>{v}</td></tr>" for k, v in figures) + "</table>",
    ]
    if curves is not None:
        parts += ["<h2>Training</h2>", f'<img src="{html.escape(rel(curves))}" alt="training and validation loss and '
                  f'learning rate against optimizer steps">']
    if categories is not None:
        parts += ["<h2>Per category</h2>", _table(categories),
                  '<img src="per_category.png" alt="SI-SDRi per category">']
    if overlap is not None:
        parts += ["<h2>Per number of overlapping sources</h2>", _table(overlap)]
    if examples:
        parts.append("<h2>Examples</h2>")
    for mixture_id, figure, sounds in examples:
        parts.append(f"<h3>{html.escape(mixture_id)}</h3>")
        if figure is not None:
            parts.append(f'<img src="{html.escape(rel(figure))}" alt="spectrograms of {html.escape(mixture_id)}">')
        parts.append('<div class="players">' + "".join(_audio(rel(path), label) for label, path in sounds) + "</div>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}table{border-collapse:collapse;"
             "margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}img{max-width:100%}"
             ".players{display:flex;flex-wrap:wrap;gap:1em}figure{margin:0}figcaption{font-size:80%}")
    page = (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(summary['tag'])}: evaluation"
            f"</title><style>{style}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n")
    io_utils.write_text(eval_dir / "index.html", page)
    return eval_dir / "index.html"

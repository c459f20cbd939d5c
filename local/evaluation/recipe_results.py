"""A recipe's committed results: `egs/<recipe>/RESULTS.md` generated from the experiments' own records.

    python -m local.evaluation.recipe_results --out egs/debian_sounds/RESULTS.md --exp_dir egs/debian_sounds/exp \
        [--tags lstm_2src_sisdr ...] [--title "debian_sounds"]

As ESPnet's recipes commit theirs: per experiment, the environment that produced it (date of the evaluation,
git commit and whether the tree had uncommitted changes, Python, torch, Asteroid, Lightning, device and threads,
from `provenance.json`), the command, the frozen config, and the test table (SI-SDRi with its 95 % bootstrap
interval, over all mixtures and over those whose sources overlap, the median, SDRi, the oracle bound and the model's
share of it, training time), read from `conf.yml`, `training.json` and `eval/summary.json`. Where a publication
reports the same model on a standard task, a "paper" line gives that figure and says how the data differ. Nothing
is typed by hand; regenerating writes only the `--out` file.
"""
import argparse
import json
from pathlib import Path

import yaml

from local.common import io_utils
from local.common.errors import RecipeError, exit_on_recipe_error
from local.common.frozen import read_frozen
from local.evaluation.report import format_interval

# Published figures of the same model family on a standard task: (figure, what, source). Only where the
# publication states the figure for the same architecture; the data here differ (said on the line).
PAPER = {
    "dprnn_tasnet": (18.8, "SI-SDRi on wsj0-2mix (8 kHz, 4 s segments)",
                     "Luo, Chen and Yoshioka, ICASSP 2020, Table 2 (DPRNN, window 2)"),
    "conv_tasnet": (15.3, "SI-SDRi on wsj0-2mix (8 kHz, 4 s segments)",
                    "Luo and Mesgarani, IEEE/ACM TASLP 2019, Table 4 (non-causal)"),
}


def _fmt(value, digits=2):
    return "-" if value is None else f"{value:.{digits}f}"


def experiment_section(exp):
    """The Markdown of one evaluated experiment, or None when it has no evaluation."""
    summary_path = exp / "eval" / "summary.json"
    if not summary_path.is_file():
        return None
    summary = json.loads(summary_path.read_text())
    cfg = read_frozen(exp / "conf.yml")
    training = json.loads((exp / "training.json").read_text()) if (exp / "training.json").is_file() else {}
    runs = json.loads((exp / "provenance.json").read_text()) if (exp / "provenance.json").is_file() else []
    last = runs[-1] if runs else {}
    packages = last.get("packages", {})
    env = [("evaluated", summary.get("evaluated_at") or "-"), ("trained (last run)", last.get("time", "-")),
           ("git commit",
            f"{last.get('git_commit')}" + (" (with uncommitted changes)" if last.get("git_dirty") else "")),
           ("Python", last.get("python", "-")), ("torch", packages.get("torch", "-")),
           ("torchaudio", packages.get("torchaudio", "-")), ("Asteroid", packages.get("asteroid", "-")),
           ("Lightning", packages.get("pytorch-lightning", "-")), ("device", last.get("device", "-")),
           ("torch threads", last.get("torch_threads", "-"))]
    lines = [f"## {exp.name}", "", "| environment | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in env]
    lines += ["", "Command (as run; from the recipe folder):", "", "```bash", last.get("command", "-"), "```", ""]
    bound = summary.get("bound")
    lines += ["| test views | SI-SDRi [95 % CI] | over overlapping mixtures | median | SDRi | bound: its SI-SDRi | "
              "share of bound | epochs | training time |", "|---|---|---|---|---|---|---|---|---|"]
    lines.append(
        f"| {summary.get('n_mixtures')} | {_fmt(summary.get('si_sdri'))} "
        f"{format_interval(summary.get('si_sdri_ci95')) or ''} | "
        f"{_fmt(summary.get('si_sdri_overlapping'))} ({summary.get('n_overlapping', '-')}) | "
        f"{_fmt(summary.get('si_sdri_median'))} | {_fmt(summary.get('sdri'))} | "
        f"{bound or '-'}: {_fmt(summary.get('bound_si_sdri'))} | {_fmt(summary.get('share_of_bound'))} | "
        f"{training.get('epochs_trained', '-')} | {_fmt(training.get('train_seconds'), 0)} s |")
    paper = PAPER.get(cfg["model"]["name"])
    if paper:
        lines += ["", f"Paper: {paper[0]:.1f} dB {paper[1]} ({paper[2]}). Here: "
                      f"{cfg['data']['dataset']} at {cfg['data']['sample_rate']} Hz, "
                      f"{cfg['data']['mixture_seconds']} s "
                      f"mixtures and this config's size: not the same data or model size, so not comparable as equals."]
    lines += ["", "<details><summary>Frozen config (exp/" + exp.name + "/conf.yml)</summary>", "", "```yaml",
              yaml.safe_dump(cfg, sort_keys=False).rstrip(), "```", "", "</details>", ""]
    return "\n".join(lines)


def write_results(exp_dir, out, title, tags=None):
    exp_dir = Path(exp_dir)
    experiments = ([exp_dir / t for t in tags] if tags
                   else sorted(p for p in exp_dir.glob("*") if (p / "conf.yml").is_file()))
    missing = [str(e) for e in experiments if not (e / "conf.yml").is_file()]
    if missing:
        raise RecipeError(f"no experiment in {', '.join(missing)}: train and evaluate it first (stages 2-3)")
    sections = [experiment_section(e) for e in experiments]
    for experiment, section in zip(experiments, sections):
        if section is None and tags:
            print(f"recipe_results: {experiment} has no evaluation (eval/summary.json); left out", flush=True)
    sections = [s for s in sections if s]
    if not sections:
        raise RecipeError(f"no evaluated experiment in {exp_dir}: run stage 3 first")
    text = (f"# Results: {title}\n\nGenerated by `python -m local.evaluation.recipe_results` from each experiment's "
            f"records (conf.yml, provenance.json, training.json, eval/summary.json); do not edit by hand. Test "
            f"figures in dB; the interval is a 95 % bootstrap interval of the mean over test mixtures; \"overlapping\" "
            f"counts mixtures whose sources sound together; the bound is the oracle mask of the model's mask type on "
            f"the same mixtures.\n\n" + "\n".join(sections))
    io_utils.write_text(Path(out), text)
    print(f"wrote {out} ({len(sections)} experiments)")
    return text


@exit_on_recipe_error
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="e.g. egs/debian_sounds/RESULTS.md")
    parser.add_argument("--exp_dir", default="exp")
    parser.add_argument("--tags", nargs="*", default=None, help="experiments to include (default: every evaluated one)")
    parser.add_argument("--title", default=None)
    args = parser.parse_args(argv)
    write_results(args.exp_dir, args.out, args.title or Path(args.out).parent.name, args.tags)


if __name__ == "__main__":
    main()

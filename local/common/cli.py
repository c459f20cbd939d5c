"""The command lines of the Python programs that utils/ scripts wrap, built with argparse alone.

This module imports only the standard library, so `utils/separate.sh --help` and `utils/sweep.sh --help` answer
on a fresh clone with the system's python3, before the environment set-up installs torch (a few GB). Each
description is its program's module docstring, read from the file without importing it.

    python3 -m local.common.cli separate --help
"""
import argparse
import ast
import sys
from pathlib import Path

LOCAL = Path(__file__).resolve().parents[1]


def _docstring(module):
    return ast.get_docstring(ast.parse((LOCAL / f"{module}.py").read_text()))


def _parser(prog, module):
    return argparse.ArgumentParser(prog=prog, description=_docstring(module),
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def separate_parser():
    """local/separate.py: a trained experiment applied to audio files."""
    parser = _parser("utils/separate.sh", "separate")
    parser.add_argument("--exp", required=True, help="experiment folder (exp/<tag>) or a best_model.pth")
    parser.add_argument("--out", required=True, help="output folder: <out>/spk<i>/<key>")
    parser.add_argument("--scp", help="'<key> <path>' list of mixtures")
    parser.add_argument("--window_seconds", type=float, default=8.0, help="longer inputs are separated in windows")
    parser.add_argument("--query", help="a query model (model.name query_lstm): write only the sound of this category, "
                                        "to <out>/<query>/<key>")
    parser.add_argument("--remove", help="a query model: write the mixture without the sound of this category, to "
                                         "<out>/without_<remove>/<key>")
    parser.add_argument("--query_audio", help="a query-by-example model (model.query_type example): an example clip "
                                              "of the sound to extract (its loudest --query_seconds), written to "
                                              "<out>/like_<clip name>/<key>")
    parser.add_argument("--query_seconds", type=float, default=1.0, help="length of the example taken from the clip")
    parser.add_argument("wavs", nargs="*", help="audio files to separate")
    return parser


def sweep_parser():
    """local/sweep.py: several configurations of one grid cell on Optuna."""
    parser = _parser("utils/sweep.sh", "sweep")
    parser.add_argument("--tag", required=True)
    parser.add_argument("--sweep", required=True, help="search space, e.g. conf/sweeps/lstm.yml")
    parser.add_argument("--n_trials", type=int, default=10, help="finished (complete or pruned) trials wanted in all")
    parser.add_argument("--storage", default="", help="'' (SQLite next to the trials), journal:PATH, or a database URL")
    parser.add_argument("--exp_dir", default="exp")
    parser.add_argument("--data_root", default="data")
    parser.add_argument("--data_dir", default="")
    parser.add_argument("--dataset", default="")
    parser.add_argument("--nj", type=int, default=1, help="parallel jobs of the evaluations")
    parser.add_argument("--trial_minutes", type=float, default=None, help="training budget per trial (overrides "
                        "the sweep file's trial_minutes)")
    parser.add_argument("overrides", nargs="*", help="config overrides group.key=value (or --group.key value)")
    return parser


PARSERS = {"separate": separate_parser, "sweep": sweep_parser}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in PARSERS:
        sys.exit(f"usage: python3 -m local.common.cli {{{','.join(PARSERS)}}} --help")
    PARSERS[sys.argv[1]]().parse_args(sys.argv[2:])

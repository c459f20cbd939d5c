"""Provenance of an experiment: which code, packages, command and seed produced it.

Every training run appends one record to exp/<tag>/provenance.json: the git commit and whether the
working tree had uncommitted changes, the versions of the packages that shape the results, the
command line (run.sh passes its own as LISTENER_COMMAND), the seed, the host and the time.
"""
import json
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

from local.common import io_utils
from local.common.config import ROOT

PACKAGES = ("torch", "torchaudio", "asteroid", "asteroid-filterbanks", "pytorch-lightning", "torchmetrics", "numpy",
            "pandas", "soundfile", "pb_bss_eval")


def git_state(root=ROOT):
    """(commit, dirty) of the repository, or (None, None) outside a git checkout."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True,
                                check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None, None
    return commit, bool(status.strip())


def package_versions():
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def next_run_number(exp_dir):
    """The number the next record_run will get (1 for a new experiment)."""
    path = Path(exp_dir) / "provenance.json"
    return len(json.loads(path.read_text())) + 1 if path.is_file() else 1


def _torch_threads():
    import torch

    return torch.get_num_threads()


def device_name(device=None, n_devices=1):
    """What trained: the GPU's name and count when `device` (the trainer's root device) is CUDA, else the CPU's
    model and core count (figures depend on both)."""
    if device is not None and getattr(device, "type", str(device)) == "cuda":
        import torch

        return f"cuda: {torch.cuda.get_device_name(device)} x {n_devices}"
    try:
        with open("/proc/cpuinfo") as info:
            model = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), None)
    except OSError:
        model = None
    return f"cpu: {model or platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


def record_run(exp_dir, cfg, stage="train", device=None, n_devices=1):
    """Append this run's provenance to exp_dir/provenance.json (atomically)."""
    path = Path(exp_dir) / "provenance.json"
    runs = json.loads(path.read_text()) if path.is_file() else []
    commit, dirty = git_state()
    runs.append({
        "run": len(runs) + 1, "stage": stage, "time": time.strftime("%Y-%m-%d %H:%M:%S"), "git_commit": commit,
        "git_dirty": dirty,
        "command": os.environ.get("LISTENER_COMMAND") or " ".join(sys.argv), "seed": cfg["training"]["seed"],
        "host": platform.node(), "python": platform.python_version(), "packages": package_versions(),
        "torch_threads": _torch_threads(), "device": device_name(device, n_devices),
    })
    io_utils.write_json(runs, path)
    return runs[-1]

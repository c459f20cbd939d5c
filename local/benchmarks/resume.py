"""Benchmarks for trustworthy training runs: kill -9 and resume, checkpoint overhead, CPU DDP.

    python -m local.benchmarks.resume [--tag lstm_2src_sisdr] [--exp_dir exp_bench] [--out exp_bench/resume.json]

Run it from a directory whose data/ holds the prepared dataset (after `./run.sh --stop_stage 1`).
It drives `run.sh --stage 2` as a researcher would and prints, then writes as JSON:

1. kill -9 in the middle of an epoch, then the same command again: the steps lost (steps done when
   killed minus the step of the checkpoint the run resumed from) and the largest weight difference
   between the resumed run and an uninterrupted one.
2. checkpoint overhead: one epoch with `training.checkpoint_every_n_steps` off, at the default and at a
   short interval; the cost per checkpoint and the throughput ratio.
3. one epoch with 1 process against 2 distributed (DDP, gloo) CPU processes on the same data.
"""
import argparse
import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]  # the repository (local/benchmarks/resume.py)
PROGRESS = re.compile(r"Epoch (\d+):\s+\d+%\|[^|]*\|\s*(\d+)/(\d+)")


def stage2(work, tag, exp_dir, overrides=(), stage=2, stop_stage=2, **popen_kwargs):
    """Start `run.sh --stage <stage> --stop_stage 2` in `work` (a subprocess in its own process group)."""
    args = [str(ROOT / "run.sh"), "--tag", tag, "--stage", str(stage), "--stop_stage", str(stop_stage),
            "--exp_dir", str(exp_dir)]
    for item in overrides:
        key, value = item.split("=", 1)
        args += [f"--{key}", value]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.Popen(args, cwd=work, env=env, start_new_session=True, **popen_kwargs)


def run_stage2(work, tag, exp_dir, overrides=(), stage=2, stop_stage=2, log=None):
    """Run stage 2 to its end; returns (wall seconds, output). Raises with the output's tail on failure."""
    start = time.time()
    with open(log or os.devnull, "w") as out:
        proc = stage2(work, tag, exp_dir, overrides, stage, stop_stage, stdout=out, stderr=subprocess.STDOUT)
        proc.wait()
    text = Path(log).read_text(errors="replace") if log else ""
    if proc.returncode != 0:
        raise RuntimeError(f"run.sh stage 2 for {tag} failed ({proc.returncode}):\n{text[-3000:]}")
    return time.time() - start, text


def steps_done(log_text):
    """Training steps completed according to the last progress line (epoch * batches + batch)."""
    matches = PROGRESS.findall(log_text)
    if not matches:
        return 0
    epoch, batch, per_epoch = (int(x) for x in matches[-1])
    return epoch * per_epoch + batch


def checkpoint_weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def max_weight_difference(a, b):
    if a.keys() != b.keys():
        raise ValueError("the two checkpoints hold different parameters")
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


def kill_and_resume(work, tag, exp_root, kill_after_step, overrides=()):
    """An uninterrupted run, then a run killed with SIGKILL once it has done `kill_after_step` steps
    and resumed by the same command. Returns the figures of the comparison."""
    work, exp_root = Path(work), Path(exp_root)
    run_stage2(work, tag, exp_root / "uninterrupted", overrides, log=work / "uninterrupted.log")
    killed_log = work / "killed.log"
    with open(killed_log, "w") as out:
        proc = stage2(work, tag, exp_root / "killed", overrides, stdout=out, stderr=subprocess.STDOUT)
        while proc.poll() is None and steps_done(killed_log.read_text(errors="replace")) < kill_after_step:
            time.sleep(0.02)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    done = steps_done(killed_log.read_text(errors="replace"))
    last = exp_root / "killed" / tag / "checkpoints" / "last.ckpt"
    resumed_from = torch.load(last, map_location="cpu", weights_only=True)["global_step"] if last.is_file() else 0
    _, resumed_text = run_stage2(work, tag, exp_root / "killed", overrides, log=work / "resumed.log")
    final = [exp_root / name / tag / "checkpoints" / "last.ckpt" for name in ("uninterrupted", "killed")]
    return {
        "killed_returncode": proc.returncode, "steps_done_when_killed": done, "resumed_from_step": resumed_from,
        "steps_lost": done - resumed_from, "resumed": "resuming from" in resumed_text,
        "final_steps": [torch.load(p, map_location="cpu", weights_only=True)["global_step"] for p in final],
        "final_learning_rates": [torch.load(p, map_location="cpu", weights_only=True)["optimizer_states"][0]
                                 ["param_groups"][0]["lr"] for p in final],
        "max_abs_weight_difference": max_weight_difference(*(checkpoint_weights(p) for p in final)),
        "resumed_training": {k: v for k, v
                             in json.loads((exp_root / "killed" / tag / "training.json").read_text()).items()
                             if k.startswith("train_seconds")},
    }


def fit_seconds(exp):
    return json.loads((Path(exp) / "training.json").read_text())["train_seconds_this_run"]


def checkpoint_overhead(work, tag, exp_root, intervals=(None, 100, 10), overrides=()):
    """One epoch per checkpoint interval: fit seconds, and the cost of one step checkpoint."""
    rows = {}
    for interval in intervals:
        name = f"ckpt_every_{interval}"
        run_stage2(work, tag, Path(exp_root) / name,
                   [*overrides, f"training.checkpoint_every_n_steps={interval or 'null'}"])
        exp = Path(exp_root) / name / tag
        steps = json.loads((exp / "training.json").read_text())["global_step"]
        rows[str(interval)] = {"fit_seconds": fit_seconds(exp), "steps": steps,
                               "step_checkpoints": steps // interval if interval else 0}
    rows["checkpoint_write_seconds"] = checkpoint_write_seconds(
        Path(exp_root) / f"ckpt_every_{intervals[-1]}" / tag / "checkpoints" / "last.ckpt")
    base = rows[str(intervals[0])]["fit_seconds"]
    for row in (r for r in rows.values() if isinstance(r, dict)):
        row["throughput_ratio"] = round(base / row["fit_seconds"], 3)
        if row["step_checkpoints"]:
            row["seconds_per_checkpoint"] = round((row["fit_seconds"] - base) / row["step_checkpoints"], 3)
    return rows


def checkpoint_write_seconds(checkpoint, repeats=7):
    """Median time to write `checkpoint` again the way training does (AtomicCheckpointIO): the cost of one
    step checkpoint, measured directly, since a handful of them in an epoch is below run-to-run noise."""
    import statistics

    from local.training.resumable import AtomicCheckpointIO

    state, io, times = torch.load(checkpoint, map_location="cpu", weights_only=True), AtomicCheckpointIO(), []
    probe = Path(checkpoint).with_name("write_probe.ckpt")
    for _ in range(repeats):
        start = time.perf_counter()
        io.save_checkpoint(state, probe)
        times.append(time.perf_counter() - start)
    size = probe.stat().st_size
    probe.unlink()
    return {"megabytes": round(size / 1e6, 1), "median_seconds": round(statistics.median(times), 3)}


def ddp_epoch(work, tag, exp_root, overrides=()):
    """One epoch with 1 process and with 2 DDP processes on CPU: command and fit wall times."""
    rows = {}
    for devices in (1, 2):
        name = f"devices_{devices}"
        wall, _ = run_stage2(work, tag, Path(exp_root) / name,
                             [*overrides, "training.accelerator=cpu", f"training.devices={devices}"])
        rows[name] = {"command_seconds": round(wall, 1), "fit_seconds": fit_seconds(Path(exp_root) / name / tag)}
    rows["ratio_2_over_1"] = round(rows["devices_2"]["fit_seconds"] / rows["devices_1"]["fit_seconds"], 3)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tag", default="lstm_2src_sisdr")
    parser.add_argument("--exp_dir", default="exp_bench/resume")
    parser.add_argument("--out", default="exp_bench/resume.json")
    parser.add_argument("--kill_after_step", type=int, default=250, help="kill -9 after this many steps (mid-epoch 2)")
    args = parser.parse_args(argv)
    work, exp_root = Path.cwd(), Path(args.exp_dir)
    one_epoch = ["training.epochs=1"]
    results = {
        "kill_and_resume": kill_and_resume(work, args.tag, exp_root / "kill", args.kill_after_step,
                                           ["training.epochs=2", "training.progress_every_n_steps=1"]),
        "checkpoint_overhead": checkpoint_overhead(work, args.tag, exp_root / "ckpt", overrides=one_epoch),
        "ddp_epoch": ddp_epoch(work, args.tag, exp_root / "ddp", overrides=one_epoch),
        "machine": f"{os.cpu_count()} CPU cores",
    }
    print(json.dumps(results, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()

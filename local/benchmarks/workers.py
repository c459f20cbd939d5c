"""Benchmark: one training alone against two on the same machine, with and without the fair share of cores.

    python -m local.benchmarks.workers [--tag lstm_2src_sisdr] [--epochs 1] [--timeout 300]
                                       [--work exp/benchmarks/workers]

Issue 13 reports that two trainings started together on a 2-core machine, each with torch's default of one
thread per core, did not finish a step in 10 minutes. This runs the same training (stage 2 of `--tag`,
`--epochs` epochs, its own experiment folder) three ways: alone with `training.threads: auto`; two at once with
`auto` (each gets cores / running trainings, local/common/ownership.py); two at once with every core each
(`training.threads` = the core count, the old behaviour), stopped after `--timeout` seconds. It prints the wall
time of every training and writes JSON. Needs the tag's data and views in `--work`/data (made first if missing).
Run it alone: its figures are wall-clock times.
"""
import argparse
import os
import subprocess
import time
from pathlib import Path

from local.benchmarks import publish
from local.common.ownership import available_cores

ROOT = Path(__file__).resolve().parents[2]


def start(tag, work, name, threads, epochs):
    log = open(work / f"{name}.log", "w")
    command = [str(ROOT / "run.sh"), "--stage", "2", "--stop_stage", "2", "--tag", tag, "--exp_dir", f"exp_{name}",
               "--training.epochs", str(epochs), "--training.early_stop_patience", "null",
               "--training.threads", str(threads)]
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    return subprocess.Popen(command, cwd=work, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def run_together(tag, work, names, threads, epochs, timeout):
    """Wall seconds of each training started at once (None: still running after `timeout`, then killed)."""
    for name in names:
        subprocess.run(["rm", "-rf", str(work / f"exp_{name}")], check=True)
    began = time.time()
    procs = {name: start(tag, work, name, threads, epochs) for name in names}
    seconds = {}
    while len(seconds) < len(procs) and time.time() - began < timeout:
        for name, proc in procs.items():
            if name not in seconds and proc.poll() is not None:
                if proc.returncode != 0:
                    raise SystemExit(f"workers: training {name} failed (exit {proc.returncode}); see {work}/{name}.log")
                seconds[name] = round(time.time() - began, 1)
        time.sleep(0.5)
    for name, proc in procs.items():
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait()
            seconds[name] = None
    return [seconds[n] for n in names]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tag", default="lstm_2src_sisdr")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=300, help="seconds before a stalled pair is killed")
    parser.add_argument("--work", default="exp/benchmarks/workers")
    args = parser.parse_args(argv)
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    subprocess.run([str(ROOT / "run.sh"), "--stage", "0", "--stop_stage", "1", "--tag", args.tag], cwd=work,
                   check=True, stdout=subprocess.DEVNULL)
    cores = available_cores()
    cases = [("one training, threads auto", ["alone"], "auto"),
             ("two trainings, threads auto", ["auto_a", "auto_b"], "auto"),
             (f"two trainings, {cores} threads each", ["all_a", "all_b"], cores)]
    rows = []
    for label, names, threads in cases:
        seconds = run_together(args.tag, work, names, threads, args.epochs, args.timeout)
        rows.append({"case": label, "threads": threads, "wall_seconds": seconds})
        shown = ", ".join("did not finish" if s is None else f"{s:.1f} s" for s in seconds)
        print(f"{label:<36} {shown}", flush=True)
    publish({"tag": args.tag, "epochs": args.epochs, "cores": cores, "timeout_seconds": args.timeout, "rows": rows},
            work / "workers.json")


if __name__ == "__main__":
    main()

"""One experiment, one owner: a lock file in the experiment's folder, and a fair share of the CPU cores.

Two `./run.sh` processes on the same tag (a grid runner started twice, or two machines over a shared `exp/`)
would both train it and overwrite each other's checkpoints. The owner of `exp/<tag>/` holds `exp/<tag>/.owner`
(host, pid, start time, command), created atomically (a hard link of a finished temporary file: it works on
NFS, where O_EXCL may not). A second process stops with one line naming the owner (exit code 75, which
`utils/run_grid.sh` reads as "another runner has this cell"). A lock left behind is taken over: on the same
host when its process is gone, from another host when the owner stopped refreshing it (a heartbeat touches
it every HEARTBEAT_SECONDS; STALE_SECONDS without one means the owner died). A stale lock is removed only under a
takeover mutex and after judging it again there, so of several contenders exactly one gets the experiment.

`run.sh` takes the lock for its whole run (stages 2-3) with its own pid and passes it down in
LISTENER_OWNER_PID; the Python stages then only keep it fresh. `python -m local.recipe train` run by hand
takes it itself. Only rank 0 of a distributed run holds it.

Cores (as issue 13 reports): two trainings started together on a 2-core machine, each with 2 OpenMP threads,
did not finish one step in 10 minutes; with one thread each they finished in 42 s. Every training registers in a
per-host folder of running jobs; `training.threads: auto` gives it cores / jobs threads (at least 1),
looked at again every 5 s of training, so a second job started by hand makes the first one yield.
"""
import argparse
import json
import os
import platform
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

from local.common.errors import RecipeError

LOCK_NAME = ".owner"
HEARTBEAT_SECONDS = 60
STALE_SECONDS = 600
TAKEOVER_NAME = ".owner.takeover"
TAKEOVER_STALE_SECONDS = 30
BUSY_EXIT_CODE = 75  # EX_TEMPFAIL: try again later


class ExperimentBusy(RecipeError):
    exit_code = BUSY_EXIT_CODE


def _start_ticks(pid):
    """When process `pid` started (clock ticks since boot, Linux), to tell it from a later one with its pid."""
    try:
        return int(Path(f"/proc/{int(pid)}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid, start_ticks=None):
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return start_ticks is None or _start_ticks(pid) in (None, start_ticks)


def _read(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None  # half-written by a killed writer, or gone


def is_stale(owner, lock_path, now=None):
    """Whether a lock's owner is gone: its process on this host, or its heartbeat from another host."""
    if owner is None:
        return True
    if owner.get("host") == socket.gethostname():
        return not _alive(owner.get("pid", -1), owner.get("pid_start"))
    try:
        age = (now or time.time()) - Path(lock_path).stat().st_mtime
    except FileNotFoundError:
        return True
    return age > STALE_SECONDS


def acquire(exp_dir, pid=None, command=None):
    """Make `pid` (default: this process) the owner of exp_dir. Returns True if it was taken now, False if the
    same pid already held it. Raises ExperimentBusy naming the live owner."""
    exp_dir, pid = Path(exp_dir), int(pid or os.getpid())
    exp_dir.mkdir(parents=True, exist_ok=True)
    lock = exp_dir / LOCK_NAME
    me = {"host": socket.gethostname(), "pid": pid, "pid_start": _start_ticks(pid),
          "since": time.strftime("%Y-%m-%d %H:%M:%S"),
          "command": command or os.environ.get("LISTENER_COMMAND") or " ".join(sys.argv)}
    deadline = time.time() + 10.0
    while time.time() < deadline:
        if _create(lock, me):
            return True
        owner = _read(lock)
        if owner and owner.get("host") == me["host"] and int(owner.get("pid", -1)) == pid:
            return False
        if not is_stale(owner, lock):
            raise ExperimentBusy(f"{exp_dir} is being run by pid {owner.get('pid')} on {owner.get('host')} since "
                                 f"{owner.get('since')} ({owner.get('command', '')!s:.120}); wait for it, or stop "
                                 f"it. If that process is gone for good, delete {lock}.")
        _take_over(exp_dir, lock, me)
    raise ExperimentBusy(f"{exp_dir}: could not take {lock} within 10 s; another process keeps changing it")


def _create(path, record):
    """Create `path` holding `record` as JSON, atomically and only if it does not exist (a hard link of a
    finished temporary file: it works on NFS, where O_EXCL may not). True if this call created it."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".owner.")
    with os.fdopen(fd, "w") as f:
        json.dump(record, f)
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        os.unlink(tmp)


def _take_over(exp_dir, lock, me):
    """Remove a stale lock, under a takeover mutex (.owner.takeover): a contender that judged the lock stale
    and then removed whatever lay at its path could remove the lock a faster contender had just created, and
    both would own the experiment (seen with eight processes racing). Under the mutex the lock is read and
    judged again; while it exists, only a takeover can replace it. A mutex left by a process killed inside
    this function (a few system calls) is cleared after TAKEOVER_STALE_SECONDS."""
    mutex = exp_dir / TAKEOVER_NAME
    if not _create(mutex, me):
        try:
            if time.time() - mutex.stat().st_mtime > TAKEOVER_STALE_SECONDS:
                mutex.unlink(missing_ok=True)
        except FileNotFoundError:
            pass
        time.sleep(0.02)
        return
    try:
        owner = _read(lock)
        if lock.exists() and is_stale(owner, lock):
            lock.unlink(missing_ok=True)
            print(f"ownership: took over {exp_dir} from pid {owner and owner.get('pid')} on "
                  f"{owner and owner.get('host')}, which is gone", flush=True)
    finally:
        mutex.unlink(missing_ok=True)


def release(exp_dir, pid=None):
    """Remove the lock if `pid` (default: this process) on this host owns it."""
    lock = Path(exp_dir) / LOCK_NAME
    owner = _read(lock)
    if owner and owner.get("host") == socket.gethostname() and int(owner.get("pid", -1)) == int(pid or os.getpid()):
        lock.unlink(missing_ok=True)
        # a run that stopped before writing anything (a config error) leaves no empty folders behind
        for folder in (Path(exp_dir), Path(exp_dir).parent):
            try:
                folder.rmdir()
            except OSError:
                break  # not empty (or not ours to remove)


def is_rank_zero():
    return os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) in ("", "0")


class ExperimentOwnership:
    """`with ExperimentOwnership(exp_dir):` around a stage: takes the lock (or keeps the one run.sh took for this
    run, LISTENER_OWNER_PID) and refreshes it in a daemon thread; releases it only if it took it."""

    def __init__(self, exp_dir):
        self.exp_dir, self.took, self._stop = Path(exp_dir), False, threading.Event()
        self.pid = int(os.environ.get("LISTENER_OWNER_PID") or os.getpid())

    def __enter__(self):
        if not is_rank_zero():
            return self
        self.took = acquire(self.exp_dir, self.pid) and self.pid == os.getpid()
        threading.Thread(target=self._heartbeat, daemon=True).start()
        return self

    def _heartbeat(self):
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                os.utime(self.exp_dir / LOCK_NAME)
            except OSError:
                pass

    def __exit__(self, *exc):
        self._stop.set()
        if self.took:
            release(self.exp_dir, self.pid)


# ------------------------------------------------------------------------------------------------ cores

def jobs_dir():
    return Path(tempfile.gettempdir()) / f"listener-jobs-{os.getuid()}"


def register_job():
    """Mark this process as a running training on this host (removed by `unregister_job` or found dead)."""
    jobs_dir().mkdir(parents=True, exist_ok=True)
    (jobs_dir() / str(os.getpid())).write_text(platform.node())


def unregister_job():
    (jobs_dir() / str(os.getpid())).unlink(missing_ok=True)


def running_jobs():
    """Live trainings on this host (files of dead processes are removed)."""
    alive = 0
    for entry in jobs_dir().glob("*") if jobs_dir().is_dir() else []:
        if entry.name.isdigit() and _alive(int(entry.name)):
            alive += 1
        else:
            entry.unlink(missing_ok=True)
    return alive


def available_cores():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def fair_threads(setting):
    """torch threads for this training: `setting` if it is a number, else cores / running trainings."""
    if setting not in (None, "auto"):
        return int(setting)
    return max(1, available_cores() // max(1, running_jobs()))


def main(argv=None):
    parser = argparse.ArgumentParser(description="Take or give back the ownership of an experiment folder "
                                                 "(used by run.sh).")
    parser.add_argument("action", choices=("acquire", "release"))
    parser.add_argument("exp_dir")
    parser.add_argument("--pid", type=int, required=True)
    args = parser.parse_args(argv)
    try:
        if args.action == "acquire":
            acquire(args.exp_dir, args.pid)
        else:
            release(args.exp_dir, args.pid)
    except RecipeError as err:
        print(f"ERROR: {err}", file=sys.stderr)
        return err.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""One experiment, one owner (local/common/ownership.py): atomic lock, take-over of dead owners, a fair
share of the cores."""
import json
import multiprocessing
import os
import socket
import subprocess
import time

import pytest

from local.common import ownership
from local.common.errors import RecipeError


@pytest.fixture
def sleeper():
    """A live process that is not us: an owner that runs elsewhere."""
    proc = subprocess.Popen(["sleep", "60"])
    yield proc.pid
    proc.kill()
    proc.wait()


def dead_pid():
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_a_live_owner_is_named_and_the_lock_is_reentrant(tmp_path, sleeper):
    exp = tmp_path / "exp" / "lstm_2src"
    assert ownership.acquire(exp, sleeper, command="./run.sh --tag lstm_2src") is True
    owner = json.loads((exp / ".owner").read_text())
    assert (owner["host"], owner["pid"]) == (socket.gethostname(), sleeper)
    assert ownership.acquire(exp, sleeper) is False  # the same owner again (run.sh, then its stages)
    with pytest.raises(ownership.ExperimentBusy, match=rf"being run by pid {sleeper} on {socket.gethostname()}") as err:
        ownership.acquire(exp)
    assert (err.value.exit_code == 75 and isinstance(err.value, RecipeError)
            and "./run.sh --tag lstm_2src" in str(err.value))
    ownership.release(exp)  # not ours: kept
    assert (exp / ".owner").is_file()
    ownership.release(exp, sleeper)
    assert not (exp / ".owner").exists()


def test_dead_owners_are_taken_over_on_this_host_and_after_silence_from_another(tmp_path, capsys):
    exp = tmp_path / "cell"
    ownership.acquire(exp, dead_pid())
    assert ownership.acquire(exp) is True and "which is gone" in capsys.readouterr().out
    assert json.loads((exp / ".owner").read_text())["pid"] == os.getpid()
    assert sorted(p.name for p in exp.iterdir()) == [".owner"]  # the stale lock is not left lying around
    # another host's lock is live while its heartbeat is fresh, stale after STALE_SECONDS without one
    (exp / ".owner").write_text(json.dumps({"host": "node-b", "pid": 1, "since": "earlier"}))
    with pytest.raises(ownership.ExperimentBusy, match="pid 1 on node-b"):
        ownership.acquire(exp)
    old = time.time() - ownership.STALE_SECONDS - 5
    os.utime(exp / ".owner", (old, old))
    assert ownership.acquire(exp) is True
    # a half-written lock (its writer killed) counts as no owner
    (exp / ".owner").write_text('{"host": ')
    assert ownership.acquire(exp, os.getpid()) is True


def test_a_reused_pid_is_not_mistaken_for_the_owner(tmp_path):
    exp = tmp_path / "cell"
    (exp).mkdir()
    me = ownership._start_ticks(os.getpid())
    if me is None:
        pytest.skip("no /proc here")
    (exp / ".owner").write_text(json.dumps({"host": socket.gethostname(), "pid": os.getppid(), "pid_start": -1}))
    assert ownership.acquire(exp) is True  # the parent's pid, but started at another time: not the owner


def _contend(exp, start, results):
    while time.time() < start:
        pass
    try:
        results.put(ownership.acquire(exp))
    except ownership.ExperimentBusy:
        results.put("busy")


def test_of_eight_processes_racing_for_a_stale_lock_exactly_one_wins(tmp_path):
    exp = tmp_path / "cell"
    ownership.acquire(exp, dead_pid())
    results, start = multiprocessing.Queue(), time.time() + 1.0
    procs = [multiprocessing.Process(target=_contend, args=(exp, start, results)) for _ in range(8)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=30) for _ in procs]
    for p in procs:
        p.join()
    assert outcomes.count(True) == 1 and outcomes.count("busy") == 7


def test_threads_are_the_cores_shared_by_the_running_trainings(tmp_path, monkeypatch, sleeper):
    monkeypatch.setattr(ownership.tempfile, "gettempdir", lambda: str(tmp_path))
    monkeypatch.setattr(ownership, "available_cores", lambda: 8)
    assert ownership.fair_threads("auto") == 8 and ownership.fair_threads(3) == 3
    ownership.register_job()
    assert ownership.running_jobs() == 1 and ownership.fair_threads("auto") == 8
    (ownership.jobs_dir() / str(sleeper)).write_text("x")
    (ownership.jobs_dir() / str(dead_pid())).write_text("x")  # a training killed without unregistering
    assert ownership.running_jobs() == 2 and ownership.fair_threads("auto") == 4
    assert len(list(ownership.jobs_dir().iterdir())) == 2  # the dead one was removed
    monkeypatch.setattr(ownership, "available_cores", lambda: 2)
    (ownership.jobs_dir() / "999999999").write_text("x")
    assert ownership.fair_threads("auto") == 1  # 2 cores, 2 or more trainings: one thread each, never 0
    ownership.unregister_job()
    assert not (ownership.jobs_dir() / str(os.getpid())).exists()


def test_a_running_training_yields_cores_to_one_started_later(tmp_path, monkeypatch, sleeper):
    """ShareCores re-reads the running trainings every few seconds: a second training appearing halves this one's
    threads at its next check, and its end gives them back."""
    import torch

    from local.training.train import ShareCores

    monkeypatch.setattr(ownership.tempfile, "gettempdir", lambda: str(tmp_path))
    monkeypatch.setattr(ownership, "available_cores", lambda: 2)
    before = torch.get_num_threads()
    try:
        ownership.register_job()
        share = ShareCores("auto", every_seconds=0.2)
        share.setup(None, None, "fit")
        assert torch.get_num_threads() == 2
        (ownership.jobs_dir() / str(sleeper)).write_text("x")  # another training starts
        share.on_train_batch_start(None, None, None, 0)
        assert torch.get_num_threads() == 2  # not yet: checked every 0.2 s, not every step
        time.sleep(0.25)
        share.on_train_batch_start(None, None, None, 1)
        assert torch.get_num_threads() == 1
        (ownership.jobs_dir() / str(sleeper)).unlink()
        time.sleep(0.25)
        share.on_train_batch_start(None, None, None, 2)
        assert torch.get_num_threads() == 2
        fixed = ShareCores(1, every_seconds=0.0)
        fixed.setup(None, None, "fit")
        assert torch.get_num_threads() == 1  # a number is kept whatever runs
    finally:
        ownership.unregister_job()
        torch.set_num_threads(before)

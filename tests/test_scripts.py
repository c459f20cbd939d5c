"""The shell entry points as a newcomer meets them: every script answers --help at once, before the
environment set-up (a few GB on a fresh clone), and exits 0."""
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(["run.sh", *(str(p.relative_to(ROOT)) for p in ROOT.glob("egs/*/run.sh")),
                  *(str(p.relative_to(ROOT)) for p in ROOT.glob("utils/*.sh") if p.name != "help.sh")])


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_script_answers_help_before_any_set_up(script, tmp_path):
    # an environment that does not exist and an interpreter that cannot create one: any set-up attempt fails
    env = dict(os.environ, LISTENER_VENV=str(tmp_path / "no_venv"), LISTENER_PYTHON="/bin/false")
    for flag in ("--help", "-h"):
        done = subprocess.run(["bash", str(ROOT / script), flag], cwd=tmp_path, capture_output=True, text=True,
                              env=env, timeout=30)
        assert done.returncode == 0, done.stderr
        assert len(done.stdout.strip().splitlines()) >= 2 and "setup_env" not in done.stderr
    assert not (tmp_path / "no_venv").exists() and not (tmp_path / "exp").exists()
    if script in ("utils/separate.sh", "utils/sweep.sh"):  # the Python program's own options, without torch
        assert "--exp" in done.stdout or "--n_trials" in done.stdout

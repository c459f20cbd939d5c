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


def test_the_code_has_no_lint_findings():
    """ruff.toml (line length 120, pycodestyle, pyflakes, import order) over the whole repository."""
    import sys

    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--output-format", "concise", "."], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-1000:]


def _markdown_files():
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted(ROOT.glob("egs/*/*.md"))]


def test_every_link_in_the_readme_and_docs_resolves():
    """Relative links [text](path#anchor) point at a file of the repository, and an anchor at one of its headings
    (GitHub's slugs: lower case, punctuation dropped, spaces to hyphens)."""
    import re

    def slugs(markdown):
        titles = re.findall(r"^#+\s+(.*)$", markdown, flags=re.M)
        return {re.sub(r"[^\w\- ]", "", t.strip().lower()).replace(" ", "-") for t in titles}

    broken = []
    for md in _markdown_files():
        text = md.read_text()
        for target in re.findall(r"\]\(([^)\s]+)\)", re.sub(r"```.*?```", "", text, flags=re.S)):
            if re.match(r"[a-z]+://|mailto:", target):
                continue
            path, _, anchor = target.partition("#")
            file = (md.parent / path).resolve() if path else md
            if not file.exists():
                broken.append(f"{md.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and file.suffix == ".md" and anchor not in slugs(file.read_text()):
                broken.append(f"{md.relative_to(ROOT)}: {target} (no heading #{anchor})")
    assert not broken, "\n".join(broken)


def test_every_repository_path_the_code_and_docs_name_exists():
    """A comment or page that names local/..., conf/..., utils/..., docs/... or egs/... names a file that exists
    (tests name the fixtures they write, e.g. conf/tiny.yml, and are left out)."""
    import re

    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    pattern = re.compile(r"\b(?:local|conf|utils|docs|egs)/[A-Za-z0-9_./-]+\.(?:py|yml|sh|md)\b")
    missing = sorted({f"{name}: {path}" for name in tracked
                      if name.endswith((".py", ".yml", ".sh", ".md", ".txt", ".toml")) and not name.startswith("tests/")
                      and (ROOT / name).is_file()
                      for path in pattern.findall((ROOT / name).read_text()) if not (ROOT / path).exists()})
    assert not missing, "\n".join(missing)

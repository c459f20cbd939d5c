#!/usr/bin/env bash
# Creates (once) and activates the project's own virtual environment with the pinned
# requirements. Sourced by run.sh and utils/run_tests.sh, so a fresh clone needs nothing else.
#
# Every package is installed at the exact version of requirements.lock (pip constraints), so that a fresh
# clone gets the packages the committed figures were made with. The environment is reused as long as
# requirements.txt and requirements.lock have not changed: a stamp file inside it records their hash.
#   LISTENER_VENV    where the environment lives (default: <repo>/.venv)
#   LISTENER_PYTHON  the interpreter that creates it (default: python3, needs >= 3.10)
# Afterwards $LISTENER_PY is the environment's python and <repo> is on PYTHONPATH.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then  # run, not sourced: --help answers here
  . "$(dirname "$0")/help.sh"; if listener_help "$0" "$@"; then exit 0; fi
fi

_se_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_se_venv="${LISTENER_VENV:-$_se_root/.venv}"
_se_req="$_se_root/requirements.txt"
_se_lock="$_se_root/requirements.lock"
_se_stamp="$_se_venv/.listener-requirements.sha256"
_se_hash="$(cat "$_se_req" "$_se_lock" | sha256sum | cut -d' ' -f1)"

if [ ! -f "$_se_stamp" ] || [ "$(cat "$_se_stamp")" != "$_se_hash" ]; then
  _se_python="${LISTENER_PYTHON:-python3}"
  if ! "$_se_python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
    echo "setup_env: $_se_python is missing or older than Python 3.10; set LISTENER_PYTHON to a newer interpreter" >&2
    exit 1
  fi
  echo "setup_env: installing pinned requirements into $_se_venv (first run only; torch is a few GB, a few minutes)" >&2
  [ -x "$_se_venv/bin/python" ] || "$_se_python" -m venv "$_se_venv"
  # pip warns once per package about unreachable extra index folders on some machines: hide that noise only.
  _se_log="$(mktemp)"
  _se_ok=true
  "$_se_venv/bin/python" -m pip install --disable-pip-version-check -q -r "$_se_req" -c "$_se_lock" >"$_se_log" 2>&1 || _se_ok=false
  grep -v "is ignored: it is neither a file nor a directory" "$_se_log" >&2 || true
  rm -f "$_se_log"
  if ! $_se_ok || ! "$_se_venv/bin/python" -c 'import torch, torchaudio, asteroid, pytorch_lightning, pb_bss_eval'; then
    echo "setup_env: installing $_se_req into $_se_venv failed (see above); fix and re-run" >&2
    exit 1
  fi
  echo "$_se_hash" > "$_se_stamp"
  echo "setup_env: environment ready" >&2
fi

LISTENER_PY="$_se_venv/bin/python"
export PYTHONPATH="$_se_root${PYTHONPATH:+:$PYTHONPATH}"
unset _se_root _se_venv _se_req _se_lock _se_stamp _se_hash _se_python _se_log _se_ok

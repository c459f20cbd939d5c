#!/usr/bin/env bash
# Hyperparameter sweep of one grid cell on Optuna (local/sweep.py): every trial an ordinary experiment in
# <exp_dir>/<tag>/trials/<NNN>/, the sweep's table and figure in <exp_dir>/<tag>/sweep/.
#   utils/sweep.sh --tag lstm_2src --sweep conf/sweeps/lstm.yml --n_trials 10 [--storage journal:/shared/lstm.log]
# Several workers (this machine or others over a shared exp/ and storage) may run the same command: they
# share the study and take the next trial each. Every option of python -m local.sweep --help applies.
set -euo pipefail
. "$(cd "$(dirname "$0")" && pwd)/help.sh"
if listener_help "$0" "$@"; then listener_cli_help sweep; exit 0; fi
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
. "$root/utils/setup_env.sh"
exec "$LISTENER_PY" -m local.sweep "$@"

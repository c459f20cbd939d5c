#!/usr/bin/env bash
# Category separation on the embedded synthetic set (the top-level ./run.sh's own data), as a recipe folder like
# the others: data/ and exp/ are written in the current directory. SWEEPS.md here holds the measured sweeps of
# the study's grid (commands and machine in it).
#   cd egs/synth && ./run.sh [--tag lstm_2src] [driver options]
#   cd egs/synth && ../../utils/sweep.sh --tag lstm_2src --sweep ../../conf/sweeps/lstm.yml --n_trials 10
# Every option of ../../run.sh --help applies.
set -euo pipefail
. "$(dirname "$0")/../../utils/help.sh"
if listener_help "$0" "$@"; then echo; exec "$(dirname "$0")/../../run.sh" --help; fi
exec "$(dirname "$0")/../../run.sh" "$@"

#!/usr/bin/env bash
# Category separation on ESC-50 (Piczak 2015: 2000 five-second clips, 50 categories, 5 folds).
#   cd egs/esc50 && ./run.sh --data_dir /data/ESC-50-master [--tag gab_5src] [driver options]
# Expects <data_dir>/meta/esc50.csv and <data_dir>/audio/*.wav (the GitHub release layout). Folds 1-3
# train, 4 validates, 5 tests (data.folds); clips are resampled from 44.1 kHz to the recipe's rate on
# the fly. data/ and exp/ are written in the current directory. Every option of ../../run.sh --help applies.
set -euo pipefail
. "$(dirname "$0")/../../utils/help.sh"
if listener_help "$0" "$@"; then echo; exec "$(dirname "$0")/../../run.sh" --help; fi
exec "$(dirname "$0")/../../run.sh" --dataset esc50 --data.format esc50 --data.sample_rate 16000 \
  --data.mixture_seconds 4.0 --data.file_selection_range null "$@"

#!/usr/bin/env bash
# Category separation on FSDKaggle2018 (Fonseca et al. 2018: 41 categories of Freesound clips).
#   cd egs/fsdkaggle2018 && ./run.sh --data_dir /data/FSDKaggle2018 [--tag vtf_3src] [driver options]
# Expects the train audio folder (FSDKaggle2018.audio_train/, or audio_train/ or train/) and its metadata
# CSV (FSDKaggle2018.meta/train_post_competition.csv, or train.csv) with fname,label,manually_verified,...
# Only manually verified clips are used; per category, files [0, 40) train, [40, 50) validate and
# [50, 60) test, as in the WildMix study; categories with fewer than 51 verified clips are left out.
set -euo pipefail
. "$(dirname "$0")/../../utils/help.sh"
if listener_help "$0" "$@"; then echo; exec "$(dirname "$0")/../../run.sh" --help; fi
exec "$(dirname "$0")/../../run.sh" --dataset fsdkaggle2018 --data.format fsdkaggle2018 --data.sample_rate 16000 \
  --data.mixture_seconds 4.0 --data.drop_small_categories true \
  --data.file_selection_range "{train: [0, 40], val: [40, 50], test: [50, 60]}" "$@"

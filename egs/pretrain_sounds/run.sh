#!/usr/bin/env bash
# Pretraining for your own small folder of sounds: one 2-source model trained on every real sound the project
# can fetch (local/data/debian_packages.py, kind "all"): the categories of egs/debian_sounds (drums, bass,
# strings, tabla from four Debian sample libraries), every Asterisk voice prompt of egs/debian_speech as one
# category "speech", and the eight embedded synthetic categories, about 3,900 files in 19 categories. Stage 0
# fetches with `apt-get download` (about 400 MB) and unpacks with `dpkg -x`; training uses dynamic mixing.
#   cd egs/pretrain_sounds && ./run.sh [--tag lstm_2src_sisdr] [driver options]
# Then fine-tune on your folder (weights only, a new optimizer; docs/training.md, "Fine-tuning"):
#   ./run.sh --data_dir ~/sounds --init_from egs/pretrain_sounds/exp/lstm_2src_sisdr
# What pretraining gains on a package the model never heard: docs/benchmarks.md, "Augmentation on small real
# datasets". Needs the package lists (`apt-get update` as root once). data/, exp/ and downloads/ are written in
# the current directory. Every option of ../../run.sh --help applies.
set -euo pipefail
. "$(dirname "$0")/../../utils/help.sh"
if listener_help "$0" "$@"; then echo; exec "$(dirname "$0")/../../run.sh" --help; fi
exec "$(dirname "$0")/../../run.sh" --dataset pretrain_sounds --data.format debian_all \
  --data_dir downloads/pretrain_sounds --data.file_selection_range null --data.dynamic_mixing true "$@"

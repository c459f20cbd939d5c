#!/usr/bin/env bash
# Speaker separation on real recorded speech: the Asterisk prompt packages (asterisk-core-sounds-{en,fr,it,ru}-wav
# and asterisk-prompt-it-menardi-wav, five voices, 8 kHz), fetched with `apt-get download` and unpacked with
# `dpkg -x` in stage 0 (about 90 MB; local/data/debian_packages.py). With five voices, every voice is in every
# split and its prompts are split 70/15/15 (a speaker-dependent task, unlike wsj0-2mix).
#   cd egs/debian_speech && ./run.sh [--data_dir DIR] [--tag dpcl_dprnn_2spk_small] [driver options]
# The default tag is upit_lstm_2spk (a BLSTM masker with utterance-level PIT on SI-SDR), the best speaker
# configuration measured on these voices within 15 minutes of CPU (docs/benchmarks.md); DPCL-DPRNN is --tag
# dpcl_dprnn_2spk_small.
# Needs the package lists (`apt-get update` as root once). data/, exp/ and downloads/ are written in the
# current directory. Every option of ../../run.sh --help applies.
set -euo pipefail
. "$(dirname "$0")/../../utils/help.sh"
if listener_help "$0" "$@"; then echo; exec "$(dirname "$0")/../../run.sh" --help; fi
exec "$(dirname "$0")/../../run.sh" --tag upit_lstm_2spk --dataset debian_speech \
  --data.format debian_speech --data_dir downloads/debian_speech --data.sample_rate 8000 \
  --data.disjoint_labels false --data.file_selection_range null --data.min_overlap 1.0 "$@"

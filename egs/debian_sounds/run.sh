#!/usr/bin/env bash
# Category separation on real recordings from Debian sample-library packages (local/data/debian_packages.py):
# sonic-pi-samples, hydrogen-data, hydrogen-drumkits and lmms-common, fetched with `apt-get download` and
# unpacked with `dpkg -x` (no installation) in stage 0, about 180 MB, with each file's license in
# <data_dir>/listing.csv. Categories come from file and drum-kit instrument names; a drum kit is one
# recording source and goes to one split, so test sounds come from kits the model never heard.
#   cd egs/debian_sounds && ./run.sh [--data_dir DIR] [--tag sudormrf_2src] [driver options]
# 8 kHz, the project's default for folders of sounds (chosen by measurement: docs/data.md, "Your own folder of sounds");
# --data.sample_rate 16000 keeps the 4-8 kHz content of cymbals and hi-hats at twice the cost per epoch.
# Needs the package lists (`apt-get update` as root once). data/, exp/ and downloads/ are written in the
# current directory. Every option of ../../run.sh --help applies.
set -euo pipefail
. "$(dirname "$0")/../../utils/help.sh"
if listener_help "$0" "$@"; then echo; exec "$(dirname "$0")/../../run.sh" --help; fi
exec "$(dirname "$0")/../../run.sh" --dataset debian_sounds --data.format debian_sounds \
  --data_dir downloads/debian_sounds --data.file_selection_range null "$@"

#!/usr/bin/env bash
# Speaker separation on the embedded synthetic speakers: DPCL-DPRNN by default.
#   egs/synth_speakers/run.sh [--tag dpcl_dprnn_2spk_small | chimera_dprnn_2spk_small | dprnn_tasnet_2spk_small]
# The configs set data.format synth_speakers, so stage 0 generates the speakers. data/ and exp/ are
# written in the current directory. Every option of ../../run.sh --help applies.
set -euo pipefail
. "$(dirname "$0")/../../utils/help.sh"
if listener_help "$0" "$@"; then echo; exec "$(dirname "$0")/../../run.sh" --help; fi
exec "$(dirname "$0")/../../run.sh" --tag dpcl_dprnn_2spk_small "$@"

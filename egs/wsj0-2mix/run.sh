#!/usr/bin/env bash
# Speaker separation on wsj0-2mix (Hershey et al. 2016), which you create with its scripts.
#   egs/wsj0-2mix/run.sh --data_dir /data/wsj0-mix/2speakers [--data.mix_variant wav8k/max] [--tag ...]
# --data_dir is the folder holding {tr,cv,tt}/{mix,s1,s2}/ or the one above wav8k/min/ (mix_variant picks
# wav8k|wav16k and min|max; set --data.sample_rate 16000 for wav16k). Stage 0 writes
# data/wsj0-2mix/{train,val,test}_{mix,s1,s2}.scp and checks keys and lengths; training uses 4 s windows.
set -euo pipefail
. "$(dirname "$0")/../../utils/help.sh"
if listener_help "$0" "$@"; then echo; exec "$(dirname "$0")/../../run.sh" --help; fi
exec "$(dirname "$0")/../../run.sh" --tag dpcl_dprnn_2spk_small --dataset wsj0-2mix --data.format wsj0-2mix \
  --data.segment_seconds 4.0 "$@"

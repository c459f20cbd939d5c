#!/usr/bin/env bash
# Speaker separation on Libri2Mix (Cosentino et al. 2020), which you create with its scripts.
#   egs/librimix/run.sh --data_dir /data/LibriMix [--data.librimix_train train-360] [--tag ...]
# --data_dir is the LibriMix folder (with Libri2Mix/wav8k/min/), Libri2Mix, or the wav8k/min folder
# itself, holding {train-100,dev,test}/{mix_clean,s1,s2}/. Stage 0 writes
# data/librimix/{train,val,test}_{mix,s1,s2}.scp and checks keys and lengths; training uses 4 s windows.
set -euo pipefail
. "$(dirname "$0")/../../utils/help.sh"
if listener_help "$0" "$@"; then echo; exec "$(dirname "$0")/../../run.sh" --help; fi
exec "$(dirname "$0")/../../run.sh" --tag dpcl_dprnn_2spk_small --dataset librimix --data.format librimix \
  --data.segment_seconds 4.0 "$@"

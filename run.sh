#!/usr/bin/env bash
# listener recipe driver: data -> views -> train -> evaluate -> report, Kaldi/ESPnet style.
# Logic lives in the Python package local/ (python -m local.recipe); this file only sequences stages.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
command_line="$0 $*"   # recorded in each experiment's provenance.json

# Options (each can be given as --name value; see --help).
stage=0            # first stage to run
stop_stage=4       # last stage to run
tag=lstm_2src_sisdr # experiment: config conf/<tag>.yml, results in <exp_dir>/<tag>/
data_dir=""        # a dataset on disk (folder format: <dir>/<category>/*.wav); empty = synthetic data
dataset=""         # name of data/<dataset>/ (default: the config's data.dataset, or the --data_dir folder's name)
data_root=data     # where prepared data and views go
exp_dir=exp        # where experiments go
nj=2               # parallel jobs (evaluation metrics)
allow_change=""    # config keys an existing experiment may continue with, changed on purpose
grid=""            # stage 4: a grid file (conf/grids/*.yml) whose cells get a status table
compare=""         # stage 4: two tags, the paired difference of their figures on the same test views
init_from=""       # fine-tuning: start a new experiment from the weights of exp/<tag> (= --training.init_from)

help_message="Usage: $0 [options] [--group.key value ...]

Runs the stages of an experiment on a dataset. With no options: every stage of the default
experiment ($tag) on the embedded synthetic dataset (set-up of .venv included on first use).

Stages:
  0  data preparation   data/<dataset>/sources.csv (synthetic data is generated here)
  1  views              data/<dataset>/<n>src/{train,val,test}.csv (mixtures as recipes, no audio)
  2  training           exp/<tag>/ (conf.yml, checkpoints/, logs/, best_model.pth)
  3  evaluation         exp/<tag>/eval/ (metrics.csv, summary.json, examples/)
  4  report             exp/RESULTS.md and exp/results.csv across all experiments

Options:
  --stage N          first stage (default: $stage)
  --stop_stage N     last stage (default: $stop_stage)
  --tag TAG          experiment = conf/<TAG>.yml (default: $tag)
  --data_dir DIR     use a dataset on disk instead of the synthetic one; DIR/<category>/*.wav
  --dataset NAME     name of the prepared dataset under --data_root
  --data_root DIR    where prepared data goes (default: $data_root)
  --exp_dir DIR      where experiments go (default: $exp_dir)
  --nj N             parallel jobs (default: $nj)
  --allow_change K   continue an experiment with these config keys changed, e.g. 'optim.lr training.epochs'
                     (recorded with the epoch in exp/<tag>/history.txt)
  --init_from DIR    start a new experiment from the best weights of another one (fine-tuning; new optimizer;
                     same model, filterbank, n_src and sample rate), e.g. --init_from exp/pretrained
  --grid FILE        stage 4 also reports the status of every cell of a grid file
  --compare A B      compare two evaluated experiments instead (stage 4 only, nothing is trained): the paired
                     difference B - A of their SI-SDRi and SDRi on the same test mixtures, 95 % bootstrap interval
  --group.key VALUE  override any config key, e.g. --training.epochs 5 --optim.lr 3e-4
  --help             this message

Examples:
  $0                                           # everything, default experiment, synthetic data
  $0 --stage 2 --stop_stage 3 --tag lstm_2src  # train and evaluate one experiment
  $0 --stage 3 --tag lstm_2src                 # re-evaluate it (no training)
  $0 --data_dir ~/sounds --exp_dir exp_sounds  # your own folder of category folders"

. "$root/utils/parse_options.sh"
# --compare takes two tags: the second is left over by the option parser, then parsing goes on.
while [ $# -gt 0 ] && [[ "$1" != --* ]] && [ -n "$compare" ] && [[ "$compare" != *" "* ]]; do
  compare="$compare $1"; shift
  . "$root/utils/parse_options.sh"
done
if [ $# -gt 0 ]; then
  echo "$0: unexpected argument '$1' (options are --name value; see --help)" >&2
  exit 1
fi
if [ -n "$compare" ]; then  # a comparison reads evaluated experiments: it is stage 4 alone
  if [ "$stage" -ne 0 ] && [ "$stage" -ne 4 ] || [ "$stop_stage" -ne 4 ]; then
    echo "$0: --compare runs stage 4 only (it reads two evaluated experiments); leave out --stage/--stop_stage" >&2
    exit 1
  fi
  stage=4
fi
for n in stage stop_stage nj; do
  [[ "${!n}" =~ ^[0-9]+$ ]] || { echo "$0: --$n must be a non-negative integer, got '${!n}'" >&2; exit 1; }
done
if [ "$stage" -gt 4 ] || [ "$stage" -gt "$stop_stage" ]; then
  echo "$0: --stage $stage --stop_stage $stop_stage selects no stage; stages are 0 to 4 and --stage <= --stop_stage" >&2
  exit 1
fi

[ -z "$init_from" ] || config_overrides+=("training.init_from=$init_from")

. "$root/utils/setup_env.sh"
export LISTENER_COMMAND="$command_line"

recipe() {
  "$LISTENER_PY" -m local.recipe "$1" --tag "$tag" --data_dir "$data_dir" --dataset "$dataset" \
    --data_root "$data_root" --exp_dir "$exp_dir" --nj "$nj" --allow_change "$allow_change" --grid "$grid" --compare "$compare" "${config_overrides[@]+"${config_overrides[@]}"}"
}

banner() {
  echo "============================================================"
  echo "stage $1: $2 ($(date '+%F %T'))"
  echo "============================================================"
}

# One owner per experiment (local/common/ownership.py): this run holds exp/<tag>/.owner through stages 2-3;
# another run on the same tag stops with exit code 75 and a line naming this one.
if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 2 ]; then
  "$LISTENER_PY" -m local.common.ownership acquire "$exp_dir/$tag" --pid $$ || exit $?
  trap '"$LISTENER_PY" -m local.common.ownership release "$exp_dir/$tag" --pid $$' EXIT
  export LISTENER_OWNER_PID=$$
fi

SECONDS=0
if [ "$stage" -le 0 ] && [ "$stop_stage" -ge 0 ]; then banner 0 "data preparation"; recipe prepare; fi
if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then banner 1 "views"; recipe views; fi
if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then banner 2 "training ($tag)"; recipe train; fi
if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then banner 3 "evaluation ($tag)"; recipe eval; fi
if [ "$stage" -le 4 ] && [ "$stop_stage" -ge 4 ]; then banner 4 "${compare:+comparison }report"; recipe report; fi
echo "run.sh: stages $stage..$stop_stage done in ${SECONDS} s"

#!/usr/bin/env bash
# Train and evaluate every cell of a grid file in turn: finished cells are skipped, unfinished ones
# resume from their last checkpoint (run.sh does both), then the report shows the grid's status. Runners
# started on several machines over one shared exp/ split the grid: a cell another runner owns is skipped.
# A grid file with `trials: N` runs a sweep of N configurations per cell instead (utils/sweep.sh, its search
# space conf/sweeps/<model>.yml); sweep workers on several machines share each cell's trials.
#   utils/run_grid.sh conf/grids/wildmix.yml [run.sh options, e.g. --exp_dir exp --training.epochs 50]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
usage="usage: $0 GRID_FILE [run.sh options]  (GRID_FILE lists tags under 'cells:', e.g. conf/grids/wildmix.yml)"
. "$root/utils/help.sh"
if listener_help "$0" "$@"; then exit 0; fi
if [ $# -lt 1 ] || [ ! -f "$1" ]; then
  echo "$usage" >&2
  exit 1
fi
grid="$1"; shift
. "$root/utils/setup_env.sh"
plan="$("$LISTENER_PY" -m local.common.grid "$grid")"  # "TAG TRIALS SWEEP_FILE" per cell, checked before any run
n=$(echo "$plan" | wc -l)
i=0
while read -r tag trials sweep; do
  i=$((i + 1))
  rc=0
  if [ "$trials" -gt 1 ]; then
    echo "=== run_grid: cell $i/$n: $tag, a sweep of $trials configurations ($sweep) ==="
    "$root/run.sh" --stage 1 --stop_stage 1 --tag "$tag" "$@" </dev/null || rc=$?
    [ "$rc" -eq 0 ] && { "$root/utils/sweep.sh" --tag "$tag" --sweep "$sweep" --n_trials "$trials" "$@" </dev/null || rc=$?; }
  else
    echo "=== run_grid: cell $i/$n: $tag ==="
    "$root/run.sh" --stage 1 --stop_stage 3 --tag "$tag" "$@" </dev/null || rc=$?
  fi
  if [ "$rc" -eq 75 ]; then  # another runner (this machine or another over the same exp/) owns the cell
    echo "=== run_grid: $tag is run by another process (see above); skipped ==="
  elif [ "$rc" -ne 0 ]; then
    exit "$rc"
  fi
done <<< "$plan"
"$root/run.sh" --stage 4 --stop_stage 4 --grid "$grid" "$@"

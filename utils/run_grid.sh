#!/usr/bin/env bash
# Train and evaluate every cell of a grid file in turn: finished cells are skipped, unfinished ones
# resume from their last checkpoint (run.sh does both), then the report shows the grid's status.
#   utils/run_grid.sh conf/grids/wildmix.yml [run.sh options, e.g. --exp_dir exp --training.epochs 50]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
if [ $# -lt 1 ] || [ ! -f "$1" ]; then
  echo "usage: $0 GRID_FILE [run.sh options]  (GRID_FILE lists tags under 'cells:', e.g. conf/grids/wildmix.yml)" >&2
  exit 1
fi
grid="$1"; shift
cells=$(sed -n 's/^[[:space:]]*-[[:space:]]*\([A-Za-z0-9_.-]*\).*/\1/p' "$grid")
n=$(echo "$cells" | wc -w)
i=0
for tag in $cells; do
  i=$((i + 1))
  echo "=== run_grid: cell $i/$n: $tag ==="
  "$root/run.sh" --stage 1 --stop_stage 3 --tag "$tag" "$@"
done
"$root/run.sh" --stage 4 --stop_stage 4 --grid "$grid" "$@"

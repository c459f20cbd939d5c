"""Grid files (conf/grids/*.yml): the cells of a study, and how many configurations each cell tries.

    cells: [lstm_2src, vtf_2src, ...]   # tags conf/<tag>.yml
    trials: 10                          # optional: each cell is an Optuna sweep of this many trials
    sweeps: conf/sweeps                 # optional: where a cell's search space lives, <sweeps>/<model.name>.yml

The WildMix study ran ten configurations per cell and kept each cell's best; `trials: 10` does the same with
utils/run_grid.sh (a sweep per cell, local/sweep.py). Without `trials` (or with 1) every cell is one experiment.
Read by utils/run_grid.sh (through `python -m local.common.grid GRID`, one line per cell) and by the stage-4
report (the status of every cell).
"""
import sys
from pathlib import Path

import yaml

from local.common.config import ROOT, load_config
from local.common.errors import RecipeError, exit_on_recipe_error


def load_grid(path):
    """{'cells': [tag, ...], 'trials': int, 'sweeps': {tag: sweep file or None}} of a grid file."""
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"grid file {path} not found (examples: conf/grids/*.yml)")
    try:
        grid = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise RecipeError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None
    cells = grid.get("cells")
    if not isinstance(cells, list) or not all(isinstance(c, str) for c in cells):
        raise RecipeError(f"{path} must hold a list of tags under 'cells' (e.g. cells: [lstm_2src, vtf_2src])")
    trials = grid.get("trials", 1)
    if not isinstance(trials, int) or isinstance(trials, bool) or trials < 1:
        raise RecipeError(f"{path}: 'trials' must be a whole number >= 1 (configurations per cell), got {trials!r}")
    sweeps = {cell: None for cell in cells}
    if trials > 1:
        sweep_dir = Path(grid.get("sweeps", "conf/sweeps"))
        sweep_dir = sweep_dir if sweep_dir.is_absolute() or sweep_dir.exists() else ROOT / sweep_dir
        for cell in cells:
            model = load_config(cell)["model"]["name"]
            sweep = sweep_dir / f"{model}.yml"
            if not sweep.is_file():
                raise RecipeError(f"{path}: cell {cell} (model {model}) has no search space {sweep}: write one "
                                  f"(see conf/sweeps/lstm.yml) or drop 'trials'")
            sweeps[cell] = str(sweep)
    return {"cells": cells, "trials": trials, "sweeps": sweeps}


@exit_on_recipe_error
def main(argv=None):
    """Prints 'TAG TRIALS SWEEP_FILE' per cell ('-' for no sweep), for utils/run_grid.sh."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        raise RecipeError("usage: python -m local.common.grid GRID_FILE")
    grid = load_grid(argv[0])
    for cell in grid["cells"]:
        print(cell, grid["trials"], grid["sweeps"][cell] or "-")


if __name__ == "__main__":
    main()

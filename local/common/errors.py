"""One exception type for mistakes the user can fix, and the guard that turns it into a one-line error.

Stages raise `RecipeError` with a message that names the file, row or key at fault and says what to do;
the command-line entry points print it on one line and exit non-zero instead of showing a traceback.
"""
import functools
import sys


class RecipeError(Exception):
    """A problem with the user's data, config or command line (not a bug in the recipe)."""

    exit_code = 1  # a subclass may say more (75: the experiment is busy, try later)


def exit_on_recipe_error(main):
    """Decorate a `main()` so that a RecipeError becomes `ERROR: <message>` on stderr and its exit status (1)."""

    @functools.wraps(main)
    def guarded(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except RecipeError as err:
            print(f"ERROR: {err}", file=sys.stderr, flush=True)
            sys.exit(err.exit_code)

    return guarded

#!/usr/bin/env bash
# The test command: sets up the project's environment (once), then runs the whole pytest suite.
# Extra arguments go to pytest, e.g. ./utils/run_tests.sh -k views -x
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
. "$root/utils/help.sh"
if listener_help "$0" "$@"; then exit 0; fi
. "$root/utils/setup_env.sh"
cd "$root"
exec "$LISTENER_PY" -m pytest tests "$@"

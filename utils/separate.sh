#!/usr/bin/env bash
# Separate audio files with a trained experiment: utils/separate.sh --exp exp/<tag> --out DIR file.wav ...
# (or --scp mix.scp). Sets up the environment like run.sh; see --help for the options.
set -euo pipefail
. "$(cd "$(dirname "$0")" && pwd)/help.sh"
if listener_help "$0" "$@"; then listener_cli_help separate; exit 0; fi
. "$(cd "$(dirname "$0")" && pwd)/setup_env.sh"
exec "$LISTENER_PY" -m local.separate "$@"

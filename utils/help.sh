# Sourced first by the scripts of utils/ and egs/: `--help` or `-h` among the arguments is answered at once,
# before the environment set-up (a few GB on a fresh clone), from the script's header comment.
#   listener_help SCRIPT ARGS...   prints SCRIPT's header comment and returns 0 when ARGS ask for help, else 1
#   listener_cli_help NAME         the option list of python -m local.common.cli NAME (standard library only)

listener_help() {
  local script="$1" arg
  shift
  for arg in "$@"; do
    if [ "$arg" = "--help" ] || [ "$arg" = "-h" ]; then
      # the comment block after the shebang, without the leading '# '
      awk 'NR == 1 && /^#!/ {next} /^#/ {sub(/^# ?/, ""); print; next} {exit}' "$script"
      return 0
    fi
  done
  return 1
}

listener_cli_help() {
  local root
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  echo
  local py
  for py in "${LISTENER_PYTHON:-python3}" python3; do
    PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" "$py" -m local.common.cli "$1" --help 2>/dev/null && return 0
  done
  echo "(the full option list needs python3 >= 3.10: python3 -m local.common.cli $1 --help)"
}

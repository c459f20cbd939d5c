#!/usr/bin/env bash
# Kaldi-style option parsing, to be sourced by a recipe after its defaults are set.
#
#   --name value   sets the shell variable `name` (dashes become underscores); it must already
#                  exist, so a typo is an error rather than a silently ignored option.
#   --name=value   the same.
#   --help | -h    prints $help_message and exits 0.
#   --group.key value | --group.key=value
#                  a config override (not a shell variable): appended to the array
#                  `config_overrides` as "group.key=value" and handed to the Python stages,
#                  which check the key against the config.
# Parsing stops at the first argument that does not start with "--"; the rest stay in "$@".
# Copyright note: follows the conventions of Kaldi's utils/parse_options.sh (Apache 2.0), rewritten.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then  # run, not sourced: --help answers here
  . "$(dirname "$0")/help.sh"; if listener_help "$0" "$@"; then exit 0; fi
fi

declare -a config_overrides=("${config_overrides[@]+"${config_overrides[@]}"}")

while [ $# -gt 0 ]; do
  case "$1" in
    --help|-h)
      printf '%s\n' "${help_message:-No help available.}"
      exit 0 ;;
    --*=*)
      _po_name="${1%%=*}"; _po_name="${_po_name#--}"; _po_value="${1#*=}"; shift ;;
    --*)
      _po_name="${1#--}"
      if [ $# -lt 2 ]; then
        echo "$0: option --$_po_name needs a value (see --help)" >&2; exit 1
      fi
      _po_value="$2"; shift 2 ;;
    *) break ;;
  esac
  if [[ "$_po_name" == *.* ]]; then
    config_overrides+=("$_po_name=$_po_value")
    continue
  fi
  _po_name="${_po_name//-/_}"
  if [[ ! "$_po_name" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || [ -z "${!_po_name+set}" ]; then
    echo "$0: unknown option --$_po_name (see --help; config keys are set as --group.key value)" >&2
    exit 1
  fi
  # Booleans stay booleans, as in Kaldi.
  if [ "${!_po_name}" = true ] || [ "${!_po_name}" = false ]; then
    if [ "$_po_value" != true ] && [ "$_po_value" != false ]; then
      echo "$0: option --$_po_name takes true or false, not '$_po_value'" >&2; exit 1
    fi
  fi
  printf -v "$_po_name" '%s' "$_po_value"
done
unset _po_name _po_value
true

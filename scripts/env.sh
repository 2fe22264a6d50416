# Sourced by scripts/build and scripts/test: make (or reuse) the virtual environment and activate it.
# The environment lives in $HGRAD_VENV (default .venv); it is (re)installed when pyproject.toml changes.
set -euo pipefail
venv="${HGRAD_VENV:-.venv}"
python="${PYTHON:-python3}"
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
  echo "hgrad needs Python 3.11 or newer; $("$python" --version) found (set PYTHON=...)" >&2; exit 1; }
if [ ! -x "$venv/bin/python" ]; then
  echo "creating the virtual environment $venv"
  "$python" -m venv "$venv"
fi
stamp="$venv/.hgrad-installed"
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "installing hgrad and its test, notebook and book dependencies into $venv"
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  "$venv/bin/python" -m pip install --quiet -e ".[test,notebooks,book]"
  echo "$want" > "$stamp"
fi
# shellcheck disable=SC1091
source "$venv/bin/activate"

#!/usr/bin/env bash
# Create .venv (Python 3.11+) and install Imprint into it in editable mode.
# Usage: scripts/venv.sh [extra]   e.g. "test" installs the test extras too.
# Re-installs only when pyproject.toml changed since the last install (stamp file in .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
extra="${1:-}"
PY="${PYTHON:-python3}"
if ! "$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
  echo "error: Imprint needs Python 3.11 or newer; '$PY' is $("$PY" --version 2>&1 || echo missing)." >&2
  echo "       Install python3.11 (Debian 12: apt-get install python3 python3-venv) or set PYTHON=..." >&2
  exit 2
fi
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv || {
    echo "error: could not create a virtualenv; on Debian install python3-venv" >&2
    exit 2
  }
fi
spec="."
[ -n "$extra" ] && spec=".[${extra}]"
stamp=".venv/.imprint-installed-${extra:-base}"
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e "$spec"
  echo "$want" > "$stamp"
fi

#!/usr/bin/env bash
# Make .venv hold Rebound and its dependencies: created on first use, reinstalled when
# pyproject.toml changes, otherwise left alone. Sourced by ./rebound and ./test.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"

find_python() {
  for candidate in python3.13 python3.12 python3.11 python3 python; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      echo "$candidate"
      return
    fi
  done
  echo "Rebound needs Python 3.11 or newer; none was found on PATH." >&2
  exit 1
}

if [ ! -x "$venv/bin/python" ]; then
  echo "Setting up Rebound in $venv (first run only)..." >&2
  "$(find_python)" -m venv "$venv"
fi

stamp="$venv/.installed-$(sha256sum "$root/pyproject.toml" | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "Installing Rebound and its dependencies into .venv..." >&2
  "$venv/bin/python" -m pip install --quiet --upgrade pip >&2
  "$venv/bin/python" -m pip install --quiet --editable "$root[dev]" >&2
  rm -f "$venv"/.installed-*
  touch "$stamp"
fi

# shellcheck shell=bash
# Shared set-up for scripts/test and scripts/demo: a Python virtualenv with logexport's
# dev dependencies at the versions pinned in requirements.lock, and the system packages the
# tests and the demo run (PostgreSQL server binaries, Chromium for the console's browser
# tests). Every step is idempotent.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"

step() { printf '\n==> %s\n' "$*"; }
note() { printf '    %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

is_root() { [ "$(id -u)" -eq 0 ]; }

# apt_install PKG... : install Debian packages as root (or via password-less sudo).
apt_install() {
  local runner=()
  if ! is_root; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      runner=(sudo -n)
    else
      note "not root: install them yourself with: sudo apt-get install -y $*"
      return 1
    fi
  fi
  command -v apt-get >/dev/null 2>&1 || { note "apt-get is not available to install: $*"; return 1; }
  note "apt-get install $*"
  "${runner[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
    "${runner[@]}" env DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

find_python() {
  local candidate
  for candidate in python3.11 python3.12 python3.13 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
      "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      command -v "$candidate"
      return 0
    fi
  done
  return 1
}

ensure_venv() {
  step "Python environment (.venv)"
  if [ ! -x "$VENV/bin/python" ]; then
    local python
    python="$(find_python)" || die "Python 3.11 or newer is required"
    note "creating .venv with $python"
    if ! "$python" -m venv "$VENV" 2>/dev/null; then
      rm -rf "$VENV"
      apt_install python3-venv || die "could not create a virtualenv (install python3-venv)"
      "$python" -m venv "$VENV"
    fi
  fi
  # Install the pinned, hashed versions from requirements.lock (scripts/lock regenerates it),
  # then logexport itself without resolving anything more. Reinstall only when the lock or
  # pyproject.toml changed; several runs may share one .venv.
  local hash stamp="$VENV/.pyproject.sha256"
  hash="$(cat requirements.lock pyproject.toml | sha256sum | cut -d' ' -f1)"
  exec 9>"$VENV/.install.lock"
  flock 9
  if [ "$(cat "$stamp" 2>/dev/null)" = "$hash" ]; then
    note "dependencies up to date"
  else
    note "pip install -r requirements.lock"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r requirements.lock
    note "pip install --no-deps -e ."
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps -e .
    local problems
    problems="$("$VENV/bin/python" -m pip check 2>/dev/null || true)"
    if grep -i '^logexport ' <<<"$problems"; then
      die "pyproject.toml needs a package requirements.lock lacks (above): run scripts/lock"
    fi
    echo "$hash" >"$stamp"
  fi
  flock -u 9
  exec 9>&-
}

have_postgres() {
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || command -v initdb >/dev/null 2>&1
}

ensure_postgres() {
  step "PostgreSQL server binaries"
  if have_postgres; then
    note "found"
    return 0
  fi
  # Only the binaries are wanted: the tests start private clusters on free ports, so the
  # package must not create and start a system-wide cluster on 5432.
  if is_root; then
    mkdir -p /etc/postgresql-common
    grep -qs '^create_main_cluster' /etc/postgresql-common/createcluster.conf ||
      echo 'create_main_cluster = false' >>/etc/postgresql-common/createcluster.conf
  fi
  apt_install postgresql || die "PostgreSQL server binaries are required (package 'postgresql')"
  have_postgres || die "PostgreSQL was installed but initdb was not found"
}

ensure_chromium() {
  step "Chromium (console browser tests)"
  if command -v chromium >/dev/null 2>&1; then
    note "found $(command -v chromium)"
    return 0
  fi
  if ! apt_install chromium; then
    note "Chromium is unavailable: browser tests will be skipped"
  fi
  return 0
}

ensure_libreoffice() {
  step "LibreOffice Calc (opens a CSV export the way a spreadsheet user would)"
  if command -v soffice >/dev/null 2>&1; then
    note "found $(command -v soffice)"
    return 0
  fi
  if ! apt_install libreoffice-calc-nogui; then
    note "LibreOffice is unavailable: the spreadsheet check of CSV exports will be skipped"
  fi
  return 0
}

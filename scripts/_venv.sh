# Shared by ./scripts/serve and ./scripts/test: make .venv and install the project into it.
# Idempotent: the install is repeated only when pyproject.toml or the requested extras change.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PYTHON="${PYTHON:-python3}"

_quiet_pip() {
    grep -v "^WARNING: Location 'file://" || true
}

ensure_venv() {
    local extras="$1"
    if [ ! -x "$VENV/bin/python" ]; then
        echo "==> creating $VENV" >&2
        "$PYTHON" -m venv "$VENV"
    fi
    local stamp="$VENV/.kcp-cache-installed"
    local want
    want="$(cat "$ROOT/pyproject.toml" | sha256sum | cut -c1-16) $extras"
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        echo "==> installing kcp-cache[$extras] into .venv" >&2
        # This machine's pip config names extra local indexes that may be absent; pip warns
        # about each one on every install. Keep the log readable, keep real errors.
        "$VENV/bin/python" -m pip install --quiet --upgrade pip 2>&1 | _quiet_pip
        "$VENV/bin/python" -m pip install --quiet -e "$ROOT[$extras]" 2>&1 | _quiet_pip
        echo "$want" > "$stamp"
    fi
}

#!/usr/bin/env bash
# Soak test: scripts/soak.sh DURATION [options]   (DURATION: 120, 2m, 30m, 1h)
# Runs edged at full speed against a private mosquitto that is restarted
# periodically, samples RSS and open fds, prints a table, exits 1 on a leak.
# Options: see `scripts/soak.sh 1 --help` (scripts/soak.py).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-}
if [ -z "$PY" ]; then
    for candidate in .venv/bin/python /tmp/venv/bin/python python3; do
        if command -v "$candidate" >/dev/null 2>&1; then PY=$candidate; break; fi
    done
fi
if [ $# -lt 1 ]; then
    echo "usage: scripts/soak.sh DURATION [--sample-every S] [--broker-every S] ..." >&2
    exit 2
fi
exec "$PY" scripts/soak.py "$@"

#!/usr/bin/env bash
# One-shot set-up on a fresh Debian / Raspberry Pi OS machine, for development,
# the demo and the tests: mosquitto from the distribution, and a venv at .venv
# with edged installed editable plus its development tools.
# (For a service install on a Pi, use scripts/install.sh instead.)
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need_apt+=(mosquitto)
command -v mosquitto_sub >/dev/null 2>&1 || need_apt+=(mosquitto-clients)
command -v gcc >/dev/null 2>&1 || need_apt+=(gcc)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
command -v shellcheck >/dev/null 2>&1 || need_apt+=(shellcheck)
command -v systemd-analyze >/dev/null 2>&1 || need_apt+=(systemd)
python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    echo "setup: installing ${need_apt[*]} with apt-get"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
# The distribution starts mosquitto as a system service where systemd runs;
# edged's tests and demo start their own private brokers on free ports.

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[dev]'
echo "setup: the command is .venv/bin/edged; for a bare \`edged\` in this shell:" \
     "export PATH=\"$PWD/.venv/bin:\$PATH\" (or: source .venv/bin/activate)"
echo "setup: done. Demo: .venv/bin/edged demo   Tests: scripts/test.sh"

#!/usr/bin/env bash
# Install or upgrade edged on a Raspberry Pi (Raspberry Pi OS bookworm, Python 3.11).
#
#   sudo scripts/install.sh                  # from this checkout
#   sudo scripts/install.sh --wheel edged-0.1.0-py3-none-any.whl
#   scripts/install.sh --dry-run             # print the plan, change nothing
#   scripts/install.sh --prefix /tmp/root    # lay the files out under a staging root
#
# What it does, each step skipped when already done (run it again to upgrade):
#   /opt/edged/venv                  venv with --system-site-packages, so the
#                                    distribution's picamera2/libcamera are visible
#   /etc/sysusers.d/edged.conf       the edged user and the video/plugdev/apex groups
#   /etc/udev/rules.d/99-edged-coral.rules   Coral USB and PCIe device permissions
#   /etc/systemd/system/edged.service
#   /etc/edged/edged.toml            only if there is none: your file is never touched
#                                    (a newer example lands beside it as edged.toml.example)
# Files are compared byte for byte (and by mode) before copying: a second run
# with nothing new reports every file "unchanged" and writes nothing.
set -euo pipefail

SRC_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly SRC_DIR
readonly VENV_REL=/opt/edged/venv

DRY_RUN=0
PREFIX=""
WHEEL=""
EXTRAS=""
NO_VENV=0
PYTHON=python3
CHANGED=0
UNCHANGED=0

usage() {
    cat <<EOF
usage: $(basename "$0") [--dry-run] [--prefix DIR] [--wheel FILE] [--extras LIST] [--no-venv] [--python EXE]

  --dry-run      print what would be done and change nothing
  --prefix DIR   install under DIR (a DESTDIR-style staging root); system
                 commands (systemd-sysusers, udevadm, systemctl) are not run
  --wheel FILE   install edged from this wheel instead of the checkout
  --extras LIST  pip extras, e.g. tflite-runtime (default: tflite-runtime on
                 32-bit ARM, where ai-edge-litert has no wheels; none elsewhere)
  --no-venv      skip creating the venv and pip (prints the commands instead)
  --python EXE   interpreter for the venv (default: python3, must be >= 3.11)
EOF
}

die() { echo "install.sh: $*" >&2; exit 1; }

while (($#)); do
    case "$1" in
        --dry-run) DRY_RUN=1 ;;
        --prefix) [[ $# -ge 2 ]] || die "--prefix needs a directory"; PREFIX="${2%/}"; shift ;;
        --prefix=*) PREFIX="${1#--prefix=}"; PREFIX="${PREFIX%/}" ;;
        --wheel) [[ $# -ge 2 ]] || die "--wheel needs a file"; WHEEL="$2"; shift ;;
        --wheel=*) WHEEL="${1#--wheel=}" ;;
        --extras) [[ $# -ge 2 ]] || die "--extras needs a list"; EXTRAS="$2"; shift ;;
        --extras=*) EXTRAS="${1#--extras=}" ;;
        --no-venv) NO_VENV=1 ;;
        --python) [[ $# -ge 2 ]] || die "--python needs an executable"; PYTHON="$2"; shift ;;
        --python=*) PYTHON="${1#--python=}" ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown option: $1" ;;
    esac
    shift
done

if [[ -n "$PREFIX" ]]; then
    [[ "$PREFIX" == /* ]] || PREFIX="$(pwd)/$PREFIX"
fi
# Without a prefix this writes to /etc and /opt: refuse early rather than
# half-install and fail on the first write.
if [[ -z "$PREFIX" && $DRY_RUN -eq 0 && $EUID -ne 0 ]]; then
    die "run as root (sudo $0 $*), or use --dry-run / --prefix DIR"
fi

readonly UNIT_SRC="$SRC_DIR/systemd/edged.service"
readonly SYSUSERS_SRC="$SRC_DIR/systemd/edged.sysusers"
readonly UDEV_SRC="$SRC_DIR/systemd/99-edged-coral.rules"
readonly CONFIG_SRC="$SRC_DIR/config/edged.toml"
for f in "$UNIT_SRC" "$SYSUSERS_SRC" "$UDEV_SRC" "$CONFIG_SRC"; do
    [[ -f "$f" ]] || die "$f: missing from the checkout"
done
if [[ -n "$WHEEL" && ! -f "$WHEEL" ]]; then
    die "$WHEEL: no such wheel"
fi

readonly UNIT_DST="$PREFIX/etc/systemd/system/edged.service"
readonly SYSUSERS_DST="$PREFIX/etc/sysusers.d/edged.conf"
readonly UDEV_DST="$PREFIX/etc/udev/rules.d/99-edged-coral.rules"
readonly CONFIG_DIR="$PREFIX/etc/edged"
readonly CONFIG_DST="$CONFIG_DIR/edged.toml"
readonly VENV="$PREFIX$VENV_REL"

say() { printf '%-14s %s\n' "$1" "$2"; }

# Run a command, or only print it under --dry-run.
run() {
    if ((DRY_RUN)); then
        say "would run" "$*"
    else
        say "run" "$*"
        "$@"
    fi
}

# install_file SRC DST MODE: copy when the content or the mode differs.
install_file() {
    local src="$1" dst="$2" mode="$3" verb
    if [[ -f "$dst" ]] && cmp -s "$src" "$dst" && [[ "$(stat -c %a "$dst")" == "${mode#0}" ]]; then
        say unchanged "$dst"
        UNCHANGED=$((UNCHANGED + 1))
        return 0
    fi
    [[ -e "$dst" ]] && verb=update || verb=install
    CHANGED=$((CHANGED + 1))
    if ((DRY_RUN)); then
        say "would $verb" "$dst"
    else
        install -D -m "$mode" "$src" "$dst"
        say "$verb" "$dst"
    fi
}

ensure_dir() {
    local dir="$1" mode="$2"
    if [[ -d "$dir" ]]; then
        return 0
    fi
    CHANGED=$((CHANGED + 1))
    if ((DRY_RUN)); then
        say "would mkdir" "$dir"
    else
        install -d -m "$mode" "$dir"
        say mkdir "$dir"
    fi
}

# Group-own a path by edged (config may hold the broker password: 0640
# root:edged), only on the real system where the group exists.
own_by_edged_group() {
    local path="$1"
    [[ -z "$PREFIX" ]] || return 0
    if ((DRY_RUN)); then
        [[ "$(stat -c %G "$path" 2>/dev/null || true)" == edged ]] || say "would chgrp" "edged $path"
        return 0
    fi
    getent group edged >/dev/null || die "group edged missing after systemd-sysusers"
    [[ "$(stat -c %G "$path")" == edged ]] || { chgrp edged "$path"; say chgrp "edged $path"; }
}

default_extras() {
    case "$(uname -m)" in
        armv6l|armv7l) echo tflite-runtime ;;
        *) echo "" ;;
    esac
}

install_venv() {
    local extras="${EXTRAS-}" target pip_target
    [[ -n "$extras" ]] || extras="$(default_extras)"
    target="${WHEEL:-$SRC_DIR}"
    pip_target="$target"
    [[ -z "$extras" ]] || pip_target="${target}[${extras}]"
    local create=("$PYTHON" -m venv --system-site-packages "$VENV")
    local pip=("$VENV/bin/python" -m pip install --upgrade --upgrade-strategy only-if-needed "$pip_target")
    if ((NO_VENV)); then
        say skipped "venv (--no-venv): ${create[*]}"
        say skipped "venv (--no-venv): ${pip[*]}"
        return 0
    fi
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
        || die "$PYTHON: Python 3.11 or newer is needed for the venv (--python EXE)"
    if [[ -x "$VENV/bin/python" ]]; then
        if ! grep -qi '^include-system-site-packages *= *true' "$VENV/pyvenv.cfg" 2>/dev/null; then
            echo "warning: $VENV was created without --system-site-packages; picamera2 from" \
                 "apt will not be visible. Fix: rm -rf $VENV and run install.sh again." >&2
        fi
        say unchanged "$VENV (exists; pip upgrades edged in place)"
    else
        run "${create[@]}"
    fi
    # pip reinstalls edged from the checkout or wheel every run: that is the
    # upgrade path, and it leaves already-satisfied dependencies alone.
    run "${pip[@]}"
}

echo "edged install: source $SRC_DIR${PREFIX:+, prefix $PREFIX}$( ((DRY_RUN)) && echo ', dry run')"

# 1. Users and groups first: the config and the unit refer to them.
install_file "$SYSUSERS_SRC" "$SYSUSERS_DST" 0644
if [[ -z "$PREFIX" ]]; then
    run systemd-sysusers "$SYSUSERS_DST"
else
    say skipped "systemd-sysusers $SYSUSERS_DST (prefix)"
fi

# 2. Device permissions for the Coral.
install_file "$UDEV_SRC" "$UDEV_DST" 0644

# 3. Configuration: create once, never overwrite.
ensure_dir "$CONFIG_DIR" 0750
if [[ -d "$CONFIG_DIR" ]]; then own_by_edged_group "$CONFIG_DIR"; fi
if [[ -e "$CONFIG_DST" ]]; then
    say keep "$CONFIG_DST (yours, not overwritten)"
    if ! cmp -s "$CONFIG_SRC" "$CONFIG_DST"; then
        # The new example goes beside it so new keys can be compared with diff.
        install_file "$CONFIG_SRC" "$CONFIG_DST.example" 0644
    fi
else
    install_file "$CONFIG_SRC" "$CONFIG_DST" 0640
    if [[ -e "$CONFIG_DST" ]]; then own_by_edged_group "$CONFIG_DST"; fi
fi

# 4. The program.
install_venv

# 5. The service.
install_file "$UNIT_SRC" "$UNIT_DST" 0644

if [[ -z "$PREFIX" ]]; then
    run udevadm control --reload
    # Re-apply the rules to a Coral that is already plugged in.
    run udevadm trigger --subsystem-match=usb --subsystem-match=apex
    run systemctl daemon-reload
else
    say skipped "udevadm control --reload; udevadm trigger; systemctl daemon-reload (prefix)"
fi

echo
if ((DRY_RUN)); then
    echo "dry run: $CHANGED to change, $UNCHANGED unchanged; nothing was written"
else
    echo "done: $CHANGED changed, $UNCHANGED unchanged"
fi

cat <<EOF

Next steps:
  1. Edit /etc/edged/edged.toml (model, camera, broker), then check it:
       sudo -u edged $VENV_REL/bin/edged check-config /etc/edged/edged.toml
  2. Coral Edge TPU: see docs/coral.md (libedgetpu, then replug the USB Accelerator).
  3. Start it now and at every boot:
       sudo systemctl enable --now edged
  4. Watch it:
       systemctl status edged        # STATUS= line: fps, delegate, broker
       journalctl -u edged -f
  After changing the config: sudo systemctl reload edged (a broken file keeps the old one running).
  After upgrading with this script: sudo systemctl restart edged
EOF

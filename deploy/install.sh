#!/usr/bin/env bash
# Install or upgrade alpaca-focuser as a systemd service on Raspberry Pi OS Bookworm. Run as root:
#     sudo deploy/install.sh
# Safe to rerun: it upgrades the package, restarts the service and never touches an existing config.toml.
#
# Environment (mainly for tests):
#   ALPACA_FOCUSER_SRC           source tree to install (default: the directory above this script)
#   ALPACA_FOCUSER_ROOT          prefix for every path written (default: empty, i.e. the real system)
#   ALPACA_FOCUSER_NO_SYSTEMCTL  1: skip apt-get, useradd and systemctl (for a test run as a non-system install)
#   ALPACA_FOCUSER_PYTHON        interpreter that creates the venv (default: python3)
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SRC="$(cd "${ALPACA_FOCUSER_SRC:-$SCRIPT_DIR/..}" && pwd)"
ROOT="${ALPACA_FOCUSER_ROOT:-}"
NO_SYSTEMCTL="${ALPACA_FOCUSER_NO_SYSTEMCTL:-0}"
PYTHON="${ALPACA_FOCUSER_PYTHON:-python3}"

SERVICE=alpaca-focuser
SERVICE_USER=alpaca-focuser
APP_DIR="$ROOT/opt/alpaca-focuser"
VENV="$APP_DIR/venv"
CONF_DIR="$ROOT/etc/alpaca-focuser"
UNIT_DIR="$ROOT/etc/systemd/system"

say() { printf '==> %s\n' "$*"; }
die() { printf 'install.sh: %s\n' "$*" >&2; exit 1; }

system_steps() { [[ "$NO_SYSTEMCTL" != 1 ]]; }

if system_steps && [[ $EUID -ne 0 ]]; then
    die "run me as root: sudo $0"
fi
[[ -f "$SRC/pyproject.toml" ]] || die "$SRC does not look like the alpaca-focuser source (no pyproject.toml)"
[[ -f "$SRC/deploy/alpaca-focuser.service" ]] || die "missing $SRC/deploy/alpaca-focuser.service"

# 1. python3-venv: Debian splits ensurepip out of python3, and without it `python3 -m venv` fails.
if ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
    system_steps || die "$PYTHON cannot create a venv (install python3-venv)"
    say "Installing python3-venv"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y python3-venv
fi

# 2. The service user: a system account that cannot log in, in dialout for the serial port.
if system_steps; then
    if ! id -u "$SERVICE_USER" >/dev/null 2>&1; then
        say "Creating system user $SERVICE_USER"
        useradd --system --user-group --groups dialout --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin --comment "ASCOM Alpaca focuser" "$SERVICE_USER"
    elif ! id -nG "$SERVICE_USER" | tr ' ' '\n' | grep -qx dialout; then
        usermod --append --groups dialout "$SERVICE_USER"
    fi
fi

# 3. The venv, created once; later runs reuse it so an upgrade only replaces the package.
if [[ ! -x "$VENV/bin/python" ]]; then
    say "Creating $VENV"
    mkdir -p "$APP_DIR"
    "$PYTHON" -m venv "$VENV"
fi

# 4. The package. Built from a scratch copy so that a root-owned build/ and *.egg-info never land in the
#    user's git clone (pip builds in the source tree).
BUILD_DIR="$(mktemp -d)"
trap 'rm -rf "$BUILD_DIR"' EXIT
mkdir "$BUILD_DIR/src"
tar -C "$SRC" --exclude=.git --exclude=build --exclude=dist --exclude='*.egg-info' --exclude=__pycache__ \
    --exclude=.venv -cf - . | tar -C "$BUILD_DIR/src" -xf -
say "Installing alpaca-focuser from $SRC"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${PIP[@]}" wheel --quiet --no-deps --wheel-dir "$BUILD_DIR/dist" "$BUILD_DIR/src"
WHEELS=("$BUILD_DIR"/dist/*.whl)
# A version bump upgrades normally, dependencies first. pip calls an unchanged version "already satisfied",
# so the code is then reinstalled explicitly (a `git pull` without a bump must still take effect), and a
# last pass adds any dependency that the new code declares.
"${PIP[@]}" install --upgrade "${WHEELS[0]}"
"${PIP[@]}" install --force-reinstall --no-deps "${WHEELS[0]}"
"${PIP[@]}" install "${WHEELS[0]}"
if [[ -f "$SRC/README.md" ]]; then
    install -m 0644 "$SRC/README.md" "$APP_DIR/README.md"  # the unit's Documentation= points here
fi

# 5. The config: copied once. A config that exists is the user's and is never overwritten. The folder is
#    group-writable for the service (setgid, so saved files keep the group): the setup page saves settings there
#    by writing a temp file beside config.toml and renaming it (the unit's ReadWritePaths= allows it).
if system_steps; then
    install -d -m 2775 -o root -g "$SERVICE_USER" "$CONF_DIR"
else
    install -d -m 0755 "$CONF_DIR"
fi
if [[ -e "$CONF_DIR/config.toml" ]]; then
    say "Keeping existing $CONF_DIR/config.toml"
else
    [[ -f "$SRC/config.toml" ]] || die "no $SRC/config.toml to start $CONF_DIR/config.toml from"
    say "Installing default $CONF_DIR/config.toml (edit it or use the setup page, then: systemctl restart $SERVICE)"
    if system_steps; then
        install -m 0664 -o root -g "$SERVICE_USER" "$SRC/config.toml" "$CONF_DIR/config.toml"
    else
        install -m 0644 "$SRC/config.toml" "$CONF_DIR/config.toml"
    fi
fi

# 6. The unit: always replaced (it is ours; local changes belong in `systemctl edit` drop-ins).
install -d -m 0755 "$UNIT_DIR"
install -m 0644 "$SRC/deploy/alpaca-focuser.service" "$UNIT_DIR/$SERVICE.service"

if system_steps; then
    systemctl daemon-reload
    systemctl enable "$SERVICE"
    if systemctl is-active --quiet "$SERVICE"; then
        say "Restarting $SERVICE to run the new version"
        systemctl restart "$SERVICE"
    else
        say "Starting $SERVICE"
        systemctl start "$SERVICE"
    fi
    say "Done. Logs: journalctl -u $SERVICE -f"
else
    say "Done (ALPACA_FOCUSER_NO_SYSTEMCTL=1: no user, no systemctl)"
fi

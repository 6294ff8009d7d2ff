#!/usr/bin/env bash
# Sets up everything the relay needs on a Debian machine with Python 3.11, idempotently:
# Debian packages (receivers, etcd 3.4, a compiler) when run as root, and a virtualenv in .venv
# with the relay installed (its Cython extension built) plus the extras given as arguments.
#   scripts/setup.sh            the relay and the demo's etcd
#   scripts/setup.sh test       also everything the tests need
set -euo pipefail
cd "$(dirname "$0")/.."

extras="demo"
required_apt=""
# the relay and its demo: a receiver, etcd 3.4, a compiler for the C twins
wanted_apt="victoria-metrics prometheus etcd-server gcc python3-dev python3-venv"
# the tests' real peers besides: DNS (dns_sd), a forward proxy, a browser (the UI), Alertmanager
test_apt="victoria-metrics prometheus etcd-server dnsmasq tinyproxy chromium prometheus-alertmanager"
for e in "$@"; do
  extras="$extras,$e"
  if [ "$e" = test ]; then
    required_apt="$test_apt"
    wanted_apt="$wanted_apt dnsmasq tinyproxy chromium prometheus-alertmanager"
  fi
done

missing=""
if command -v dpkg-query >/dev/null 2>&1; then
  for p in $wanted_apt; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
  done
fi
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing Debian packages:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || true
    # One at a time, so that a package this machine cannot have does not block the others.
    for p in $missing; do
      apt-get install -y -qq --no-install-recommends "$p" >/dev/null 2>&1 || echo "setup: could not install $p"
    done
  else
    echo "setup: not root; skipping Debian packages:$missing"
  fi
fi
for p in $required_apt; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    echo "setup: required Debian package $p is not installed" >&2
    exit 1
  fi
done

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[$extras]" 2> >(grep -vE "Warning|!!|\*\*\*|^\s*$|corresp|editable|wheel_obj|precedence|name as your package" >&2)
.venv/bin/python -c "import relay, relay._ext as e; print('setup: relay', relay.__version__, '- C extensions:', 'built' if all(e.loaded().values()) else 'not built (pure Python)')"

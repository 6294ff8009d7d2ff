#!/usr/bin/env bash
# Quickstart: set up, then run the relay's main job on a local default: a local 3-member etcd
# cluster, scraped by the relay, remote-written to a local VictoriaMetrics (or, where it cannot be
# installed, the relay's JSON-lines sink), and show what arrived.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/relay demo "$@"

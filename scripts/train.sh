#!/usr/bin/env bash
# Sets up, builds and trains a config (default: configs/tiny.cfg). Extra arguments are passed to
# `dsa train` as overrides, e.g. scripts/train.sh configs/tiny.cfg train.steps=50.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
config="${1:-configs/tiny.cfg}"
shift || true
exec "${DSA_BUILD_DIR:-build}/dsa" train "$config" "$@"

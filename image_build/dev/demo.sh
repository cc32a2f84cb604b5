#!/usr/bin/env bash
# The README's first command: install what go2aliyun needs on this Debian 12 machine
# (as root), then migrate the sample server and boot the image (image_build/dev/demo.py).
#   bash image_build/dev/demo.sh [--cloud local|fake-aliyun] [--work DIR] [--keep]
# `--help` explains both modes (and installs nothing).
set -euo pipefail
cd "$(dirname "$0")/../.."
for arg in "$@"; do
  case "$arg" in
    -h|--help) exec python3 -m image_build.dev.demo --help ;;
  esac
done
bash image_build/setup.sh
exec .venv/bin/python3 -m image_build.dev.demo "$@"

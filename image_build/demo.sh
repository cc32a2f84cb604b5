#!/usr/bin/env bash
# The README's first command: install what go2aliyun needs on this Debian 12 machine
# (as root), then migrate the sample server and boot the image (image_build/demo.py).
set -euo pipefail
cd "$(dirname "$0")/.."
bash image_build/setup.sh
exec python3 -m image_build.demo "$@"

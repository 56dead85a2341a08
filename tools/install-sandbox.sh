#!/usr/bin/env bash
# Bubblewrap, the sandbox that grading runs student code in (tools/grading/sandbox.py), from
# Debian's packages.
set -euo pipefail
if [ -x /usr/bin/bwrap ]; then
  exit 0
fi
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq bubblewrap >/dev/null

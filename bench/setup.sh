#!/usr/bin/env bash
# One-time setup for the benchmark suite: Debian's nginx with the nchan module (the C peer), and
# the Python side (`pip install -e '.[bench]'`: picows, uvloop, aiohttp, matplotlib; websockets
# comes with the test extra). Every server the suite runs is started by the suite itself, in a temp
# prefix on loopback; no system nginx is ever started (policy-rc.d keeps apt from doing it).
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
# Pushpin (with condure and zurl) is the peer of the upstream benchmark (python -m bench.upstream);
# it too is only ever run by the suite, in a temp dir (policy-rc.d keeps apt from starting its service).
if ! command -v nginx >/dev/null 2>&1 || [[ ! -e /usr/lib/nginx/modules/ngx_nchan_module.so ]] \
   || ! command -v pushpin >/dev/null 2>&1 || ! command -v condure >/dev/null 2>&1 || ! command -v zurl >/dev/null 2>&1; then
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
    fi
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends nginx libnginx-mod-nchan pushpin condure zurl >/dev/null
fi
pip install -q -e '.[test,bench]'
python -c "import picows, uvloop, aiohttp, matplotlib, websockets; print('bench ready: python -m bench --help')"

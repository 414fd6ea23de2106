#!/usr/bin/env bash
# Rolling deploy of a new app version across hosts behind a load balancer,
# one host at a time, with nothing but `wasm-host reload`. Each host swaps
# in place (no restart, no connection dropped), so the load balancer never
# sees a host go away; the script checks each host answers from the new
# version before it moves on, and stops at the first host that refuses.
#
# Usage:
#   contrib/rolling-deploy.sh APP COMPONENT HOST...
#
#   APP        the app's name in the hosts' config (`shop`)
#   COMPONENT  what to deploy: oci://REGISTRY/REPO@sha256:… (best: every
#              host runs the very same bytes) or a .wasm path valid on
#              every host
#   HOST       how to reach each host's control socket: `ssh:NAME` runs
#              `wasm-host reload` over ssh on NAME; a path is a local
#              control socket (several hosts on one machine)
#
# Environment:
#   CHECK_URL_<n>  optional URL per host (n = 1, 2, …) to GET after its
#                  reload; the deploy stops unless it answers 2xx
#   PAUSE          seconds to wait between hosts (default 2)
#   COMPILE_ARGS   for a .wasm path, each host first runs `wasm-host
#                  compile COMPONENT $COMPILE_ARGS`, so its reload reads
#                  optimized code from the cache instead of compiling under
#                  load; give the --cache-dir/--max-memory the host serves
#                  with (default: none, the host's defaults). Set
#                  PRECOMPILE=0 to skip it.
#
# Example (three hosts, each with its app on :8080 and admin on :9090):
#   CHECK_URL_1=http://web1:9090/readyz CHECK_URL_2=http://web2:9090/readyz \
#   CHECK_URL_3=http://web3:9090/readyz \
#   contrib/rolling-deploy.sh shop oci://ghcr.io/acme/shop@sha256:… \
#       ssh:web1 ssh:web2 ssh:web3
set -euo pipefail

if [ $# -lt 3 ]; then
    sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
    exit 2
fi
app=$1 component=$2
shift 2
pause=${PAUSE:-2}

n=0
for host in "$@"; do
    n=$((n + 1))
    started=$(date +%s%N)
    if [ "${PRECOMPILE:-1}" = 1 ] && [[ $component != oci://* ]]; then
        # shellcheck disable=SC2086 # COMPILE_ARGS is a list of flags
        case $host in
            ssh:*) ssh "${host#ssh:}" wasm-host compile "$component" ${COMPILE_ARGS:-} ;;
            *) wasm-host compile "$component" ${COMPILE_ARGS:-} ;;
        esac
    fi
    echo "[$n/$#] $host: reloading $app to $component"
    case $host in
        ssh:*) ssh "${host#ssh:}" wasm-host reload "$app" "$component" ;;
        *) wasm-host reload --control "$host" "$app" "$component" ;;
    esac
    check_var="CHECK_URL_$n"
    if [ -n "${!check_var:-}" ]; then
        curl --fail --silent --show-error --max-time 5 -o /dev/null "${!check_var}"
    fi
    echo "[$n/$#] $host: live on the new version in $((($(date +%s%N) - started) / 1000000)) ms"
    if [ "$n" -lt $# ]; then
        sleep "$pause"
    fi
done
echo "deployed $component to $# host(s)"

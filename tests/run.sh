#!/usr/bin/env bash
# Runs every test on a fresh machine: installs what the tests need (the
# wasm32-wasip2 target; redis-server, docker-registry, nginx and pushpin,
# which some end-to-end tests start on loopback; openssl, which makes their
# test certificates; Node.js with npm and python3, whose toolchains build
# the JavaScript and Python test components), then `cargo test` with any
# arguments given. The README's test command, and what .ci/run calls.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target add wasm32-wasip2 >/dev/null

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v docker-registry >/dev/null || missing+=(docker-registry)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
command -v openssl >/dev/null || missing+=(openssl)
command -v pushpin >/dev/null || missing+=(pushpin)
# The JavaScript tests build with componentize-js from npm
# (tests/support/js-component.sh, Node.js 20 or later); the Python one with
# componentize-py from PyPI (tests/support/python-component.sh).
command -v npm >/dev/null || missing+=(nodejs npm)
command -v python3 >/dev/null || missing+=(python3 python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
    sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" apt-get install -y -qq "${missing[@]}"
    # The packages start system services of their own (unless a
    # policy-rc.d forbids it; pushpin's holds :7999 and :5561, and brings a
    # zurl); the tests start theirs on free ports and need none of these.
    for service in redis-server docker-registry nginx pushpin zurl; do
        "${sudo[@]}" service "$service" stop >/dev/null 2>&1 || true
    done
fi

cargo test "$@"

#!/usr/bin/env bash
# Builds examples/js-hello into a WASI 0.2 HTTP component (world
# `wasi:http/proxy`, StarlingMonkey's `fetch` event) with componentize-js
# from npm, and prints the path of the .wasm as its only line on stdout.
#
#   bash tests/support/js-component.sh [VERSION]
#
# VERSION is what the app answers at / ("hello from js VERSION"); without
# it, the version in examples/js-hello/package.json. Tests build two versions
# to reload from one to the other.
#
# Both steps are cached under ${XDG_CACHE_HOME:-$HOME/.cache}/wasm-host/js:
# - deps-<sha256>: the example's npm packages (componentize-js, esbuild, hono,
#   exactly as package-lock.json pins them), installed once with `npm ci`.
#   The hash covers package.json and package-lock.json;
# - js-hello-<sha256>.wasm: the component, built only when no file of that
#   name exists. The hash covers the installed packages' hash, VERSION, this
#   script, every file of examples/js-hello (not node_modules/, build/, dist/)
#   and the WASI WIT files of wit/deps it is built against, so any change to
#   one of them builds anew.
#
# Needs: Node.js 20 or later with npm; network access to the npm registry on
# the first run (npm's own cache, ~/.npm, serves later installs).
set -euo pipefail

me="js-component.sh"
fail() {
    printf '%s: %s\n' "$me" "$1" >&2
    shift
    for hint in "$@"; do
        printf '  %s\n' "$hint" >&2
    done
    exit 1
}

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
app_dir="$root/examples/js-hello"
wit_deps="$root/wit/deps"
script="$root/tests/support/js-component.sh"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/wasm-host/js"
version="${1:-}"

[ $# -le 1 ] || fail "too many arguments" "usage: bash tests/support/js-component.sh [VERSION]"
case "$version" in
    *[!A-Za-z0-9._+-]*) fail "VERSION may hold only letters, digits and . _ + -: '$version'" ;;
esac
[ -f "$app_dir/build.mjs" ] && [ -f "$app_dir/package-lock.json" ] ||
    fail "no app at $app_dir (build.mjs and package-lock.json expected)"
[ -d "$wit_deps" ] || fail "no WASI WIT packages at $wit_deps"
command -v node >/dev/null && command -v npm >/dev/null ||
    fail "Node.js and npm are needed to build the JavaScript component, and one is not on PATH" \
        "install Node.js 20 or later with npm (Debian: apt-get install nodejs npm)"
node_major="$(node -p 'process.versions.node.split(".")[0]')"
[ "$node_major" -ge 20 ] ||
    fail "componentize-js and the build need Node.js 20 or later; this is $(node --version)" \
        "install a newer Node.js, or put one first on PATH"

mkdir -p "$cache" || fail "cannot create the cache directory $cache"
# One build at a time: tests may ask for the component in parallel.
exec 9>"$cache/.lock"
flock 9 || fail "cannot lock $cache/.lock"

# --- The npm packages -----------------------------------------------------------
deps_key="$(cat "$app_dir/package.json" "$app_dir/package-lock.json" | sha256sum | cut -d' ' -f1)"
deps="$cache/deps-$deps_key"
# Written last: a directory without it is a broken install and is redone.
done_mark="$deps/.installed"

install_deps() {
    rm -rf "$deps" "$deps.tmp"
    mkdir -p "$deps.tmp"
    cp "$app_dir/package.json" "$app_dir/package-lock.json" "$deps.tmp/"
    local log="$cache/install.log"
    local started=$SECONDS
    echo "$me: installing the npm packages of examples/js-hello (componentize-js, esbuild, hono) into $deps" >&2
    # --ignore-scripts: no package here needs an install script (esbuild finds
    # its platform binary, an npm package of its own, without one).
    if ! (cd "$deps.tmp" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error) >"$log" 2>&1; then
        rm -rf "$deps.tmp"
        fail "npm ci could not install the packages of $app_dir/package-lock.json (log: $log)" \
            "is the npm registry reachable? $(tail -n1 "$log")"
    fi
    mv "$deps.tmp" "$deps"
    echo "$((SECONDS - started))" >"$done_mark"
    echo "$me: installed in $((SECONDS - started))s" >&2
}
[ -f "$done_mark" ] || install_deps

# --- The cache key ----------------------------------------------------------------
# Every input as "sha256  path" lines (paths relative, in a fixed order).
inputs() {
    (cd "$app_dir" && find . \( -name node_modules -o -name build -o -name dist \) -prune -o \
        -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum | sed 's|  \./|  app/|')
    (cd "$wit_deps" && find . -type f -name '*.wit' -print0 |
        LC_ALL=C sort -z | xargs -0 -r sha256sum | sed 's|  \./|  wit/|')
    printf '%s  script\n' "$(sha256sum <"$script" | cut -d' ' -f1)"
}
key="$({
    printf 'deps %s\nversion %s\n' "$deps_key" "${version:-<package.json>}"
    inputs
} | sha256sum | cut -d' ' -f1)"
out="$cache/js-hello-$key.wasm"
if [ -s "$out" ]; then
    printf '%s\n' "$out"
    exit 0
fi

# --- The build ----------------------------------------------------------------------
# From a copy of the app, so nothing lands in the work tree, with the cached
# packages as its node_modules.
work="$(mktemp -d "$cache/build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
mkdir "$work/app"
(cd "$app_dir" && find . -mindepth 1 -maxdepth 1 ! -name node_modules ! -name build ! -name dist \
    -exec cp -R {} "$work/app/" \;)
ln -s "$deps/node_modules" "$work/app/node_modules"
build_args=(--out "$work/out.wasm" --work-dir "$work/build" --wit-deps "$wit_deps")
[ -z "$version" ] || build_args+=(--app-version "$version")
log="$work/build.log"
started=$SECONDS
if ! (cd "$work/app" && node build.mjs "${build_args[@]}") >"$log" 2>&1; then
    cat "$log" >&2
    fail "the build of $app_dir failed (its output is above)" \
        "fix the app; a missing package means package.json and package-lock.json disagree (run 'npm install' in $app_dir)"
fi
[ -s "$work/out.wasm" ] || fail "build.mjs reported success but wrote no component"
mv "$work/out.wasm" "$out.tmp.$$"
mv "$out.tmp.$$" "$out"
# Builds and installs of inputs long gone (a build is ~13 MiB, an install ~400 MiB).
find "$cache" -maxdepth 1 -name 'js-hello-*.wasm' ! -name "$(basename "$out")" -mtime +30 -delete || true
find "$cache" -maxdepth 1 -name 'deps-*' ! -name "$(basename "$deps")" -mtime +30 -exec rm -rf {} + || true
echo "$me: built $(basename "$out") in $((SECONDS - started))s" >&2
printf '%s\n' "$out"

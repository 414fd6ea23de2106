#!/usr/bin/env bash
# Builds examples/python-p3 into a WASI 0.3 HTTP component (world
# `wasi:http/service`) with componentize-py from PyPI, and prints the path of
# the .wasm as its only line on stdout.
#
# Both steps are cached under ${XDG_CACHE_HOME:-$HOME/.cache}/wasm-host/py:
# - venv-<version>: componentize-py, installed once (a venv, or
#   `pip install --target` where Debian's python3-venv is missing);
# - python-p3-<sha256>.wasm: the component, built only when no file of that
#   name exists. The hash covers the componentize-py version, the world, this
#   script, every file of examples/python-p3 and every WIT file it is built
#   against, so any change to one of them builds anew.
#
# The WIT is the one the host links: wasmtime-wasi-http's WASI 0.3 files, read
# from cargo's registry at the version Cargo.lock names (componentize-py ships
# none). Set WASM_HOST_P3_WIT to another directory to build against that.
# PYTHON picks the interpreter (default python3, 3.10 or later).
#
# Needs: python3 with venv, or with pip; network access to PyPI on the first
# run; the crate sources cargo fetched when it built wasm-host.
set -euo pipefail

# componentize-py 0.25 is the first release that targets the final WASI 0.3.0
# (0.24 and earlier target 0.3.0 release candidates, which wasmtime 48 does
# not link).
COMPONENTIZE_PY_VERSION=0.25.1

me="python-component.sh"
fail() {
    printf '%s: %s\n' "$me" "$1" >&2
    shift
    for hint in "$@"; do
        printf '  %s\n' "$hint" >&2
    done
    exit 1
}

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
app_dir="$root/examples/python-p3"
script="$root/tests/support/python-component.sh"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/wasm-host/py"
python="${PYTHON:-python3}"

[ -f "$app_dir/app.py" ] || fail "no app at $app_dir/app.py"
command -v "$python" >/dev/null ||
    fail "no Python interpreter '$python' on PATH" \
        "install one (Debian: apt-get install python3 python3-pip), or set PYTHON"
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' ||
    fail "componentize-py needs Python 3.10 or later; $python is $("$python" --version 2>&1)" \
        "set PYTHON to a newer interpreter"

# --- The WIT the host links -------------------------------------------------
find_wit() {
    if [ -n "${WASM_HOST_P3_WIT:-}" ]; then
        printf '%s\n' "$WASM_HOST_P3_WIT"
        return
    fi
    local version
    version="$(awk '/^name = "wasmtime-wasi-http"$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' \
        "$root/Cargo.lock")"
    [ -n "$version" ] || fail "Cargo.lock names no wasmtime-wasi-http version"
    local dir
    for dir in "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/"wasmtime-wasi-http-$version/src/p3/wit"; do
        if [ -d "$dir" ]; then
            printf '%s\n' "$dir"
            return
        fi
    done
    fail "the WASI 0.3 WIT of wasmtime-wasi-http $version is not in cargo's registry" \
        "run 'cargo fetch' in $root (a build of wasm-host does it too)," \
        "or set WASM_HOST_P3_WIT to a directory holding wasi:http@0.3 WIT with its deps"
}
wit="$(find_wit)"
http_version="$(grep -rhs --include='*.wit' '^package wasi:http@' "$wit" |
    sed -n 's/^package wasi:http@\([^;]*\);.*/\1/p' | head -n1)" || true
[ -n "$http_version" ] || fail "no 'package wasi:http@…;' in the WIT files under $wit"
world="wasi:http/service@$http_version"

mkdir -p "$cache" || fail "cannot create the cache directory $cache"
# One build at a time: tests may ask for the component in parallel.
exec 9>"$cache/.lock"
flock 9 || fail "cannot lock $cache/.lock"

# --- The cache key ------------------------------------------------------------
# Every input as "path sha256" lines (paths relative, in a fixed order).
inputs() {
    (cd "$app_dir" && find . -type f ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 |
        LC_ALL=C sort -z | xargs -0 -r sha256sum | sed 's|  \./|  app/|')
    (cd "$wit" && find . -type f -name '*.wit' -print0 |
        LC_ALL=C sort -z | xargs -0 -r sha256sum | sed 's|  \./|  wit/|')
    printf '%s  script\n' "$(sha256sum <"$script" | cut -d' ' -f1)"
}
key="$({
    printf 'componentize-py %s\nworld %s\n' "$COMPONENTIZE_PY_VERSION" "$world"
    inputs
} | sha256sum | cut -d' ' -f1)"
out="$cache/python-p3-$key.wasm"
if [ -s "$out" ]; then
    printf '%s\n' "$out"
    exit 0
fi

# --- componentize-py ----------------------------------------------------------
tool="$cache/venv-$COMPONENTIZE_PY_VERSION"
# Written last: a directory without it is a broken install and is redone.
done_mark="$tool/.installed"

install_tool() {
    rm -rf "$tool"
    local pip_args=(install --quiet --disable-pip-version-check --no-input
        --only-binary=:all: "componentize-py==$COMPONENTIZE_PY_VERSION")
    local log="$cache/install.log"
    echo "$me: installing componentize-py $COMPONENTIZE_PY_VERSION into $tool" >&2
    if "$python" -m venv "$tool" >"$log" 2>&1; then
        "$tool/bin/python" -m pip "${pip_args[@]}" >>"$log" 2>&1 ||
            fail "pip could not install componentize-py $COMPONENTIZE_PY_VERSION into $tool (log: $log)" \
                "is PyPI reachable? $(tail -n1 "$log")"
        echo venv >"$done_mark"
        return
    fi
    # Debian without python3-venv: venv fails for want of ensurepip. Install
    # into a plain directory with the system's pip instead (--target also
    # passes Debian's externally-managed guard).
    echo "$me: '$python -m venv' failed (no python3-venv? see $log); using pip install --target" >&2
    rm -rf "$tool"
    "$python" -m pip --version >/dev/null 2>&1 ||
        fail "$python has neither a working venv module nor pip" \
            "install one of them (Debian: apt-get install python3-venv, or python3-pip)"
    "$python" -m pip "${pip_args[@]}" --target "$tool/site" >>"$log" 2>&1 ||
        fail "pip could not install componentize-py $COMPONENTIZE_PY_VERSION into $tool/site (log: $log)" \
            "is PyPI reachable? $(tail -n1 "$log")"
    echo target >"$done_mark"
}
[ -f "$done_mark" ] || install_tool

componentize_py() {
    # The module's entry point, so neither mode relies on a console script.
    local run=(-c 'import sys, componentize_py; sys.argv[0] = "componentize-py"; sys.exit(componentize_py.script())')
    if [ "$(cat "$done_mark")" = venv ]; then
        "$tool/bin/python" "${run[@]}" "$@"
    else
        PYTHONPATH="$tool/site${PYTHONPATH:+:$PYTHONPATH}" "$python" "${run[@]}" "$@"
    fi
}

# --- The build ----------------------------------------------------------------
# From a copy of the app: pre-initialization writes __pycache__ next to the
# sources, which must not land in the work tree.
work="$(mktemp -d "$cache/build.XXXXXX")"
trap 'rm -rf "$work"' EXIT
cp -R "$app_dir/." "$work/app"
rm -rf "$work/app/__pycache__"
# componentize-py also mounts a site-packages for the app to import from:
# VIRTUAL_ENV's, else whatever `python3` on PATH reports. An empty one keeps
# the build from seeing (or writing bytecode into) the machine's packages.
mkdir -p "$work/no-venv/lib/site-packages"
log="$work/build.log"
started=$SECONDS
# No Rust backtrace in its errors: the message above it is what helps.
if ! (cd "$work" && VIRTUAL_ENV="$work/no-venv" RUST_BACKTRACE=0 RUST_LIB_BACKTRACE=0 componentize_py -d "$wit" -w "$world" \
    componentize -p "$work/app" app -o "$work/out.wasm") >"$log" 2>&1; then
    cat "$log" >&2
    fail "componentize-py $COMPONENTIZE_PY_VERSION could not build $app_dir/app.py for $world (its output is above)" \
        "fix the app, or check that the WIT at $wit defines $world"
fi
[ -s "$work/out.wasm" ] || fail "componentize-py reported success but wrote no component"
mv "$work/out.wasm" "$out.tmp.$$"
mv "$out.tmp.$$" "$out"
# Builds of inputs long gone (each is ~20 MiB).
find "$cache" -maxdepth 1 -name 'python-p3-*.wasm' ! -name "$(basename "$out")" -mtime +30 -delete || true
echo "$me: built $(basename "$out") in $((SECONDS - started))s" >&2
printf '%s\n' "$out"

#!/usr/bin/env python3
"""Checks that the host's folders use only the layers below them.

Each top-level folder of host/src is a layer (see the README's Layout); a
file may name `crate::FOLDER` only for a folder of its own rank or lower.
Same-rank imports are allowed (file-level cycles are caught by the cycle
check, which .ci/run also runs). Reads `crate::` paths as text.
"""
import os, re, sys

ROOT = sys.argv[1] if len(sys.argv) > 1 else "host/src"
# Lowest first. kv (state), realtime (channels, held-connection protocol)
# and ops (metrics, logs) sit beside everything and reach nothing; oci (the registry client) reaches only the runtime's
# digest type.
RANK = {
    "ops": 0, "kv": 0, "realtime": 0, "build": 0,
    "runtime": 1,
    "oci": 2,
    "app": 3,
    "hosting": 4,
    "control": 5,
    "config": 6,
    "supervisor": 7,
    "cli": 8,
}

def folder(path):
    rel = os.path.relpath(path, ROOT).split(os.sep)
    return rel[0] if len(rel) > 1 else None

bad = []
for d, _, fs in os.walk(ROOT):
    for f in fs:
        if not f.endswith(".rs"):
            continue
        p = os.path.join(d, f)
        own = folder(p)
        if own is None:
            continue
        if own not in RANK:
            bad.append(f"{p}: folder {own} has no layer; add it to .ci/layers.py and the README")
            continue
        src = re.sub(r"//[^\n]*", "", open(p, encoding="utf-8").read())
        used = set(re.findall(r"crate::([a-z_]+)", src))
        for grp in re.findall(r"crate::\{([^}]*)\}", src):
            used.update(item.strip().split("::")[0] for item in grp.split(",") if item.strip())
        for other in used:
            if other in RANK and RANK[other] > RANK[own]:
                bad.append(f"{p}: layer {own} uses {other}, a layer above it")
for line in sorted(bad):
    print(line)
print(f"{len(bad)} layering violations")
sys.exit(1 if bad else 0)

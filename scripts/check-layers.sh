#!/usr/bin/env bash
# Checks that no two modules of a package import each other, directly or
# through others (docs/architecture.md draws the layers). A module is a
# top-level module of a package's src/ (a directory counts as one); an
# import is any `crate::<module>` path or `use crate::{<module>, ...}` in
# its non-test code. Packages: `cargo tree` shows they form no cycle
# (cargo refuses one anyway).
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 - "$@" <<'PY'
import os, re, sys

def reexports(src):
    """Items the package root re-exports, by the module they come from."""
    owner = {}
    for root in ("lib.rs", "main.rs"):
        path = os.path.join(src, root)
        if not os.path.exists(path):
            continue
        text = open(path).read()
        for mod, items in re.findall(r"pub use ([a-z_0-9]+)::\{([^}]*)\}", text):
            for item in re.findall(r"\b(\w+)\b", items):
                owner[item] = mod
        for mod, item in re.findall(r"pub use ([a-z_0-9]+)::(\w+);", text):
            owner[item] = mod
    return owner

def modules(src):
    owner = reexports(src)
    graph = {}
    for dirpath, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            path = os.path.join(dirpath, f)
            rel = os.path.relpath(path, src)
            top = rel.split(os.sep)[0].removesuffix(".rs")
            if top in ("lib", "main"):
                continue  # the root only declares and re-exports
            text = open(path).read()
            # Unit tests may reach anywhere.
            text = re.split(r"#\[cfg\(test\)\]\s*mod tests", text)[0]
            text = re.sub(r"//[^\n]*", "", text)
            deps = set(re.findall(r"crate::([a-z_0-9]+)", text))
            deps |= {owner.get(i, i) for i in re.findall(r"crate::([A-Z]\w*)", text)}
            for group in re.findall(r"crate::\{([^}]*)\}", text):
                deps |= {owner.get(i, i) for i in re.findall(r"\b(\w+)\b", group)}
            graph.setdefault(top, set()).update(d for d in deps if d != top)
    names = set(graph)
    return {m: {d for d in ds if d in names} for m, ds in graph.items()}

def cycles(graph):
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]
    def visit(v):
        index[v] = low[v] = n[0]; n[0] += 1
        stack.append(v); on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w); low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc = []
            while True:
                w = stack.pop(); on.discard(w); scc.append(w)
                if w == v: break
            if len(scc) > 1:
                out.append(sorted(scc))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out

bad = False
for src in ("crates/sealfs/src", "src", "mountd/src"):
    graph = modules(src)
    found = cycles(graph)
    for c in found:
        bad = True
        edges = [f"{a} -> {b}" for a in c for b in sorted(graph[a]) if b in c]
        print(f"{src}: import cycle among {', '.join(c)}: {'; '.join(edges)}")
    if "-v" in sys.argv:
        for m in sorted(graph):
            print(f"{src}: {m} -> {', '.join(sorted(graph[m])) or '(nothing)'}")
if bad:
    sys.exit(1)
print("check-layers: no import cycles")
PY

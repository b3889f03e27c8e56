#!/usr/bin/python3
"""Checks a component's imports against the Spin 3.6 allow-list and its exports.

usage: check_imports.py ALLOWLIST COMPONENT.wasm [--spin-toml FILE] [--export IFACE]...
                        [--require IMPORT]...

Imports come from `wasm-tools component wit`. An import passes if it matches a line of
ALLOWLIST or is a dependency declared in --spin-toml (`[component.*.dependencies]`, which
Spin composes at load time). Every --export must be exported and every --require imported.
Prints one `PASS name` / `FAIL name: why` line per check; exits 1 if any failed.
"""
import argparse, re, subprocess, sys, tomllib


def world_items(wit: str):
    """(imports, exports) of the component's own world: `import x;` / `export x;`, and
    function/other imports as `name: ...` (never allowed)."""
    # the component's world is the one whose body lists the imports; wasm-tools prints
    # `package root:component;` then `world root { ... }`
    m = re.search(r"^world root \{\n(.*?)^\}", wit, re.S | re.M)
    if not m:
        raise SystemExit(f"no `world root` in wasm-tools output:\n{wit[:2000]}")
    imports, exports = [], []
    for line in m.group(1).splitlines():
        line = line.strip()
        for kind, acc in (("import ", imports), ("export ", exports)):
            if line.startswith(kind):
                acc.append(line[len(kind):].rstrip(";").strip())
    return imports, exports


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("allowlist")
    ap.add_argument("component")
    ap.add_argument("--spin-toml")
    ap.add_argument("--export", action="append", default=[])
    ap.add_argument("--require", action="append", default=[])
    a = ap.parse_args()

    patterns = [re.compile(l.strip()) for l in open(a.allowlist)
                if l.strip() and not l.lstrip().startswith("#")]
    deps = set()
    if a.spin_toml:
        manifest = tomllib.load(open(a.spin_toml, "rb"))
        for comp in manifest.get("component", {}).values():
            deps.update(comp.get("dependencies", {}).keys())

    name = a.component.rsplit("/", 1)[-1]
    wit = subprocess.run(["wasm-tools", "component", "wit", a.component],
                         check=True, capture_output=True, text=True).stdout
    imports, exports = world_items(wit)
    failed = 0

    def report(ok, what, why=""):
        nonlocal failed
        print(f"PASS {name}: {what}" if ok else f"FAIL {name}: {what}: {why}")
        failed += not ok

    bad = []
    for imp in imports:
        if any(p.fullmatch(imp) for p in patterns):
            continue
        if imp.split("@")[0] in deps or imp in deps:
            continue
        bad.append(imp)
    report(not bad, f"{len(imports)} imports all provided by Spin 3.6"
           + (f" or declared dependencies {sorted(deps)}" if deps else ""),
           "not provided: " + ", ".join(bad))
    for e in a.export:
        report(e in exports, f"exports {e}", f"exports are {exports}")
    for r in a.require:
        report(r in imports, f"imports {r}", f"imports are {imports}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""The import graph of `shared/src` and the layering it must keep (issue 15).

Prints each module and the crate modules it names (in `use`, in paths and in doc links:
a doc link that points up a layer is a dependency a reader follows too), then checks:
  - no cycle among modules;
  - `domain` names nothing of the crate but `error` and other `domain` modules;
  - `aws` names nothing of `tasks`.
  - no `aws_sdk_*` name in `domain` or `tasks` outside tests: SDK types stop at the adapters.
Exit status 1 with the offending edges when a rule is broken. Test code is left out (a
module declared `#[cfg(test)] mod name;` and an inline `#[cfg(test)] mod name { .. }`, which
runs to the end of its file by the crate's convention): tests may reach across layers.
Run by `make lint`; `python3 scripts/module-graph.py` prints the graph alone.
"""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "shared", "src")


TEST_MODULE_FILE = re.compile(r"#\[cfg\(test\)\]\s*(?:pub(?:\([a-z]+\))?\s+)?mod\s+(\w+)\s*;")
TEST_MODULE_INLINE = re.compile(r"#\[cfg\(test\)\]\s*(?:pub(?:\([a-z]+\))?\s+)?mod\s+\w+\s*\{")


def modules():
    sources = {}
    for directory, _, files in os.walk(ROOT):
        for name in files:
            if not name.endswith(".rs"):
                continue
            path = os.path.join(directory, name)
            module = os.path.relpath(path, ROOT)[: -len(".rs")]
            if module.endswith("/mod"):
                module = module[: -len("/mod")]
            with open(path, encoding="utf-8") as source:
                sources[module.replace("/", "::")] = source.read()
    test_only = set()
    for module, text in sources.items():
        # lib.rs's children are the top-level modules; any other file's are below it.
        prefix = "" if module == "lib" else f"{module}::"
        for match in TEST_MODULE_FILE.finditer(text):
            test_only.add(prefix + match.group(1))
    found = {}
    for module, text in sources.items():
        if module in test_only:
            continue
        text = TEST_MODULE_FILE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
        inline = TEST_MODULE_INLINE.search(text)
        found[module] = text if inline is None else text[: inline.start()]
    return found


def graph(found):
    names = set(found)
    edges = {module: set() for module in found}
    for module, text in found.items():
        for match in re.finditer(r"crate::([a-z_]+(?:::[a-z_]+)*)", text):
            parts = match.group(1).split("::")
            for length in range(len(parts), 0, -1):
                candidate = "::".join(parts[:length])
                if candidate in names:
                    # a parent `mod.rs` lists its children: not a dependency on them
                    if candidate != module and not candidate.startswith(module + "::"):
                        edges[module].add(candidate)
                    break
    return edges


def cycles(edges):
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    counter = [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10000)
    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def layer(module):
    return module.split("::")[0]


def main():
    found = modules()
    edges = graph(found)
    for module in sorted(edges):
        print(f"{module} -> {' '.join(sorted(edges[module])) or '(nothing)'}")
    problems = [f"cycle: {' <-> '.join(c)}" for c in cycles(edges)]
    for module, targets in sorted(edges.items()):
        for target in sorted(targets):
            if layer(module) == "domain" and layer(target) not in ("domain", "error"):
                problems.append(f"domain depends on {target}: {module} -> {target}")
            if layer(module) == "aws" and layer(target) == "tasks":
                problems.append(f"an adapter depends on a task: {module} -> {target}")
    for module, text in sorted(found.items()):
        if layer(module) in ("domain", "tasks"):
            for number, line in enumerate(text.splitlines(), 1):
                if "aws_sdk_" in line:
                    problems.append(f"an SDK type in {module} (line {number}): {line.strip()}")
    if problems:
        print("\n".join(["", "module graph broken:"] + problems), file=sys.stderr)
        return 1
    print("\nno cycle; domain depends only on error; aws depends on no task; no SDK type in")
    print("domain or tasks outside tests")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""The import graph of `shared/src` and the layering it must keep (issue 15).

Prints each module and the crate modules it names (in `use`, in paths and in doc links:
a doc link that points up a layer is a dependency a reader follows too), then checks:
  - no cycle among modules;
  - `domain` names nothing of the crate but `error` and other `domain` modules;
  - `aws` names nothing of `tasks`.
Exit status 1 with the offending edges when a rule is broken. Test modules
(`#[cfg(test)]` to the end of a file) are left out: tests may reach across layers.
Run by `make lint`; `python3 scripts/module-graph.py` prints the graph alone.
"""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "shared", "src")


def modules():
    found = {}
    for directory, _, files in os.walk(ROOT):
        for name in files:
            if not name.endswith(".rs"):
                continue
            path = os.path.join(directory, name)
            module = os.path.relpath(path, ROOT)[: -len(".rs")]
            if module.endswith("/mod"):
                module = module[: -len("/mod")]
            with open(path, encoding="utf-8") as source:
                text = source.read()
            cut = text.find("#[cfg(test)]")
            found[module.replace("/", "::")] = text if cut < 0 else text[:cut]
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
    edges = graph(modules())
    for module in sorted(edges):
        print(f"{module} -> {' '.join(sorted(edges[module])) or '(nothing)'}")
    problems = [f"cycle: {' <-> '.join(c)}" for c in cycles(edges)]
    for module, targets in sorted(edges.items()):
        for target in sorted(targets):
            if layer(module) == "domain" and layer(target) not in ("domain", "error"):
                problems.append(f"domain depends on {target}: {module} -> {target}")
            if layer(module) == "aws" and layer(target) == "tasks":
                problems.append(f"an adapter depends on a task: {module} -> {target}")
    if problems:
        print("\n".join(["", "module graph broken:"] + problems), file=sys.stderr)
        return 1
    print("\nno cycle; domain depends only on error; aws depends on no task")
    return 0


if __name__ == "__main__":
    sys.exit(main())

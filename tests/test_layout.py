"""The shape of the package: imports go one way between its sub-packages, and none goes round in a circle.

The declared order (each entry may import itself and what is above it, never what is below):
core, threads -> nn -> engine -> models -> io -> analysis -> plots -> cli. A test walks the import
statements of every module (static, with ``ast``: imports inside functions count too, since a lazy
import is still a dependency), so an upward arrow or a cycle fails here before it confuses a reader.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "mst_ref"

# rank of each top-level part of mst_ref; a module may import parts of equal or lower rank
LAYERS = {"core": 0, "threads": 0, "nn": 1, "engine": 2, "models": 3, "io": 4, "analysis": 5,
          "distributed": 6, "plots": 7, "cli": 8}


def module_name(path):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path):
    """Every mst_ref module a file imports (absolute names), resolving relative imports."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("mst_ref"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("mst_ref"):
                continue
            for alias in node.names:  # `from mst_ref.cli import common` imports the module mst_ref.cli.common
                sub = f"{target}.{alias.name}"
                found.add(sub if _exists(sub) else target)
    return found


def _exists(name):
    rel = Path(*name.split(".")[1:])
    return (PACKAGE / rel).with_suffix(".py").exists() or (PACKAGE / rel / "__init__.py").exists()


def part_of(name):
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else None  # None: the package's own __init__


GRAPH = {module_name(p): imports_of(p) for p in PACKAGE.rglob("*.py")}


def test_every_part_is_declared():
    undeclared = {part_of(m) for m in GRAPH} - set(LAYERS) - {None}
    assert not undeclared, f"parts of mst_ref without a place in LAYERS: {sorted(undeclared)}"


def test_no_upward_import_between_parts():
    upward = []
    for module, targets in GRAPH.items():
        here = part_of(module)
        if here is None:
            continue  # mst_ref/__init__.py names the public API, loading most of it lazily
        for target in targets:
            there = part_of(target)
            if there is not None and LAYERS[there] > LAYERS[here]:
                upward.append(f"{module} -> {target}")
    assert not upward, "imports against the declared order:\n" + "\n".join(sorted(upward))


def test_no_import_cycle():
    # depth-first search with colours; a grey node met again closes a cycle
    colour, stack, cycles = {}, [], []

    def visit(node):
        colour[node] = "grey"
        stack.append(node)
        for nxt in sorted(GRAPH.get(node, ())):
            if nxt == node or nxt not in GRAPH:
                continue
            if colour.get(nxt) == "grey":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in colour:
                visit(nxt)
        stack.pop()
        colour[node] = "black"

    for node in sorted(GRAPH):
        if node not in colour:
            visit(node)
    # a package's __init__ importing its own modules is not a cycle of ideas; skip edges into a parent
    real = [c for c in cycles if not any(b.startswith(a + ".") for a, b in zip(c, c[1:]))]
    assert not real, "import cycles:\n" + "\n".join(" -> ".join(c) for c in real)


def test_import_mst_ref_loads_no_cli_and_no_plotting():
    code = ("import sys, mst_ref; bad = sorted(m for m in sys.modules if m.startswith(('mst_ref.cli', "
            "'mst_ref.plots', 'mst_ref.analysis')) or m in ('torch', 'matplotlib')); print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"import mst_ref pulled in {out.strip()}"


@pytest.mark.parametrize("name", ["qcfs", "clip_activation", "if_neuron", "IFState", "MST", "MSTConfig",
                                  "QCFSCNN", "CNNConfig", "load_checkpoint", "load_state_dict", "load_dataset",
                                  "CheckpointError", "DataError", "Mode", "read_events"])
def test_public_names_resolve_to_the_defining_object(name):
    import mst_ref

    obj = getattr(mst_ref, name)
    assert obj.__module__.startswith("mst_ref."), f"mst_ref.{name} comes from {obj.__module__}"
    assert getattr(sys.modules[obj.__module__], name) is obj

"""The package's rooms and their order (docs/development.md, "Layout"), read from the
imports themselves with ``ast``: no module imports from a higher room (or from a sibling
room on its own floor), and no modules import each other in a circle. Every import
counts, also those inside functions."""
import ast
import os
import os.path as osp

import pytest

from harness import ROOT

PACKAGE = osp.join(ROOT, "expedite_mm")
# floor of each room, bottom up; a room may import its own modules and lower floors only
FLOORS = {
    "compat": 0,                                     # torch / mmengine version differences
    "ops": 1,                                        # the operators (pure torch)
    "core": 2,                                       # the loop and the arguments (pure torch)
    "models": 3, "datasets": 3, "evaluation": 3,     # on the OpenMMLab packages
    "registration": 4,                               # the one list of what is registered
    "apis": 5,                                       # what a user imports
    "analysis": 6, "converters": 6,                  # what the tools compute / convert
    "__init__": 7, "cli": 7,                         # the package's face
    "utils": 8, "dpt": 8, "benchmark": 8,            # deprecated paths (shims)
}
# floors whose rooms may import each other: the face (``cli`` imports ``expedite_mm``) and
# the shims (``dpt`` re-exports through ``utils.moved``)
SHARED_FLOORS = (7, 8)
PURE_TORCH = ("compat", "ops", "core")   # rooms that import no OpenMMLab package at import


def modules():
    """``{module name: path}`` of every module of the package."""
    found = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = osp.join(folder, name)
                parts = osp.relpath(path, ROOT)[:-3].split(os.sep)
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                found[".".join(parts)] = path
    return found


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports(module: str, path: str, known):
    """The package modules ``module`` imports (absolute or relative, anywhere in it)."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[:len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [target] + [f"{target}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            # the module itself, else its closest package that is one of ours
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name.startswith("expedite_mm") and name != module:
                found.add(name)
    return found


GRAPH = None


def graph():
    global GRAPH
    if GRAPH is None:
        known = modules()
        GRAPH = {name: imports(name, path, known) for name, path in known.items()}
    return GRAPH


def test_every_room_has_a_floor():
    rooms = {room(name) for name in graph()}
    assert rooms <= set(FLOORS), f"rooms without a floor: {sorted(rooms - set(FLOORS))}"


def test_no_import_runs_up_or_across():
    wrong = []
    for module, targets in graph().items():
        for target in targets:
            if target == "expedite_mm":
                target_room = "__init__"
            else:
                target_room = room(target)
            here, there = FLOORS[room(module)], FLOORS[target_room]
            if target_room != room(module) and (there > here or there == here
                                                and here not in SHARED_FLOORS):
                wrong.append(f"{module} imports {target} ({target_room}, floor {there} >= "
                             f"{here})")
    assert wrong == []


def test_no_import_cycles():
    g = graph()
    # the package itself ("expedite_mm", its face) is imported by every module's parent
    # import; only edges between modules count
    edges = {m: {t for t in ts if t != "expedite_mm"} for m, ts in g.items()}
    state, stack, cycles = {}, [], []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                cycles.append(" -> ".join(stack[stack.index(target):] + [target]))
            elif target not in state:
                visit(target)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    assert cycles == []


@pytest.mark.parametrize("name", PURE_TORCH)
def test_lowest_rooms_name_no_openmmlab_package(name):
    """Pure torch at import: no module of these rooms imports an OpenMMLab package at its
    top level (a function may, for an optional feature)."""
    offenders = []
    for module, path in modules().items():
        if room(module) != name:
            continue
        tree = ast.parse(open(path, encoding="utf-8").read(), path)
        for node in tree.body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) \
                    else [node.module or ""]
                offenders += [f"{module}: {n}" for n in names
                              if n.split(".")[0] in ("mmengine", "mmcv", "mmseg", "mmdet",
                                                     "mmpretrain")]
    assert offenders == []


def test_the_layering_test_sees_an_upward_import(tmp_path):
    """The reader resolves relative imports: a core module importing ``..apis`` is caught."""
    path = tmp_path / "backbone.py"
    path.write_text("from ..apis.config import load_config\nfrom . import args\n")
    known = {"expedite_mm.apis.config": "", "expedite_mm.core.args": "",
             "expedite_mm.core.backbone": str(path)}
    assert imports("expedite_mm.core.backbone", str(path), known) == \
        {"expedite_mm.apis.config", "expedite_mm.core.args"}

"""The package's shape: no import cycles, a light `import emoeditor`, every folder named in the README."""

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "emoeditor"

# Imported only where a function needs them (or by modules a user imports on purpose), never by
# `import emoeditor`: each costs seconds or is an optional extra.
HEAVY = ("diffusers", "transformers", "accelerate", "torchvision", "matplotlib", "scipy", "skimage", "cv2",
         "bitsandbytes", "pytorch_grad_cam", "tensorboard", "huggingface_hub")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _target(name: str, known: dict) -> str:
    """The module an import of `name` runs: itself, or its closest enclosing package/module."""
    while name not in known and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def import_graph() -> dict[str, set[str]]:
    """module -> the emoeditor modules it imports, at top level or inside functions.

    ``from emoeditor.pkg import x`` is an import of ``emoeditor.pkg.x`` when x is a submodule, else
    of the package (its __init__). Importing ``emoeditor.pkg.x`` also runs ``emoeditor/pkg/__init__``
    first, an edge unless pkg encloses the importer (then its __init__ is already running). A module
    that walks a folder with ``pkgutil.iter_modules`` (the editors' discovery) imports every module
    of its own folder: for a package's __init__, edges package -> each submodule.
    """
    known = modules()
    graph: dict[str, set[str]] = {name: set() for name in known}
    for name, path in known.items():
        is_package = path.name == "__init__.py"
        package = name if is_package else name.rsplit(".", 1)[0]
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from .x import y / from . import y
                    anchor = package.split(".")
                    anchor = anchor[:len(anchor) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                           for alias in node.names]
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                  and node.func.attr in ("iter_modules", "walk_packages")):
                folder = path.parent
                targets = [module_name(p) for p in sorted(folder.glob("*.py")) if p.name != "__init__.py"]
                targets += [module_name(p) for p in sorted(folder.glob("*/__init__.py"))]
            else:
                continue
            for target in targets:
                if target != "emoeditor" and not target.startswith("emoeditor."):
                    continue
                parts = _target(target, known).split(".")
                for depth in range(2, len(parts) + 1):  # enclosing packages' __init__s, then the module
                    module = ".".join(parts[:depth])
                    if module in known and module != name and not name.startswith(module + "."):
                        graph[name].add(module)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle [a, b, ..., a] per strongly connected component of more than one module."""
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[set[str]] = []

    def visit(v: str) -> None:  # Tarjan; the package is shallow enough for recursion
        order[v] = low[v] = len(order)
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if w not in order:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], order[w])
        if low[v] == order[v]:
            component = set()
            while not component or v not in component:
                component.add(stack.pop())
            if len(component) > 1:
                components.append(component)

    for v in sorted(graph):
        if v not in order:
            visit(v)
    return [_cycle_through(graph, component) for component in components]


def _cycle_through(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest cycle from the component's first module back to itself, inside the component."""
    start = min(component)
    paths, seen = [[start]], {start}
    while paths:
        path = paths.pop(0)
        for w in sorted(graph[path[-1]] & component):
            if w == start:
                return path + [start]
            if w not in seen:
                seen.add(w)
                paths.append(path + [w])
    raise AssertionError(f"no cycle through {start}")  # cannot happen in a strongly connected component


def test_graph_builder_sees_function_level_relative_and_dynamic_imports():
    graph = import_graph()
    assert "emoeditor.constants" in graph["emoeditor"]  # the package's __init__
    assert "emoeditor.editing.pipeline" in graph["emoeditor.editing.loading"]
    # emoeditor.models.latents runs emoeditor/models/__init__ first, except for modules inside models/
    assert "emoeditor.models" in graph["emoeditor.editing.pipeline"]
    assert "emoeditor.models" not in graph["emoeditor.models.tiny"]
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a", "e"}, "e": {"d"}}) == [
        ["a", "b", "c", "a"], ["d", "e", "d"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []
    discovering = [m for m, p in modules().items() if "iter_modules" in p.read_text()]
    for module in discovering:  # the editors' discovery imports every file of its folder
        folder = modules()[module].parent
        assert {module_name(p) for p in folder.glob("*.py") if p.name != "__init__.py"} - {module} <= graph[module]


def test_no_import_cycles_between_emoeditor_modules():
    cycles = find_cycles(import_graph())
    assert not cycles, "import cycles (counting imports inside functions):\n" + "\n".join(
        " -> ".join(cycle) for cycle in cycles)


def test_import_emoeditor_pulls_in_no_heavy_library():
    out = subprocess.run([sys.executable, "-X", "importtime", "-c", "import emoeditor"], cwd=ROOT,
                         capture_output=True, text=True, check=True)
    # importtime lines: "import time: self [us] | cumulative | imported package" on stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines() if line.startswith("import time:")}
    roots = {name.split(".")[0] for name in imported}
    assert "emoeditor" in roots
    heavy = sorted(set(HEAVY) & roots)
    assert not heavy, f"`import emoeditor` imports {heavy}; import them inside the functions that need them"


def test_every_package_folder_has_a_line_in_the_readme_layout_table():
    readme = (ROOT / "README.md").read_text()
    rows = {m.group(1) for m in re.finditer(r"^\|\s*`?(emoeditor/[\w/]+/)`?\s*\|", readme, re.MULTILINE)}
    folders = sorted(f"emoeditor/{p.parent.relative_to(PACKAGE).as_posix()}/"
                     for p in PACKAGE.rglob("__init__.py") if p.parent != PACKAGE)
    missing = [f for f in folders if f not in rows]
    assert not missing, f"README.md's layout table has no `| {missing[0]} | purpose |` row for {missing}"

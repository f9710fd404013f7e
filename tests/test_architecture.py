"""The package's layers import downwards only, and no module imports another that imports it back.

Read from the source (every import statement, function bodies included; ``if TYPE_CHECKING:``
blocks excepted, as they never run), so a cycle hidden in a function body fails too.
"""

import ast
import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import polydiff

PACKAGE = Path(polydiff.__file__).parent
# Top to bottom; a layer may import its own and any lower layer, never a higher one.
LAYERS = [
    {"__main__", "cli", "commands"},
    {"tasks", "baselines"},
    {"sampling"},
    {"model", "diffusion"},
    {"data"},
    {"chem"},
    {"types", "utils"},
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, modules: set[str]) -> set[str]:
    """The polydiff modules a file imports at run time."""
    tree = ast.parse(path.read_text())
    type_checking = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and getattr(block.test, "id", getattr(block.test, "attr", None)) == "TYPE_CHECKING"
        for node in ast.walk(block)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in type_checking:
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name.startswith("polydiff."):
                found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules it imports; package ``__init__`` re-exports are left out (the public API is lazy)."""
    paths = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {name: imports(path, set(paths)) - {name} for name, path in paths.items() if path.name != "__init__.py"}


def subpackage(module: str) -> str:
    return module.split(".")[1]


def layer(module: str) -> int:
    return next(i for i, names in enumerate(LAYERS) if subpackage(module) in names)


def test_every_subpackage_has_a_layer():
    assert {subpackage(module) for module in import_graph()} <= set().union(*LAYERS)


def test_layers_import_downwards_only():
    upward = [
        f"{module} -> {target}"
        for module, targets in import_graph().items()
        for target in targets
        if layer(target) < layer(module)
    ]
    assert upward == []


def test_no_module_imports_one_that_imports_it_back():
    graph = import_graph()

    def reaches(start: str, goal: str) -> bool:
        seen, stack = set(), list(graph[start])
        while stack:
            module = stack.pop()
            if module == goal:
                return True
            if module not in seen and module in graph:
                seen.add(module)
                stack.extend(graph[module])
        return False

    assert [module for module in graph if reaches(module, module)] == []


def test_sampling_loads_without_the_training_code():
    code = "import sys, polydiff.sampling; print(sorted(m for m in sys.modules if m.startswith('polydiff.tasks')))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout == "[]\n"


def test_every_module_imports():
    # A stale import after a move fails here, not in whichever test first touches the module.
    for module in pkgutil.walk_packages(polydiff.__path__, "polydiff."):
        importlib.import_module(module.name)

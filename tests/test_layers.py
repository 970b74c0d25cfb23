"""The packages' layers (STYLE.md, "Layers"), read from the code's own imports with ast:
each package imports only its own modules and the layers below it, and no two modules
import each other, however indirectly, function-level imports included.

    custom_common                      the settings table, collectives, atomic files
    custom_transforms                  augmentation
    custom_datasets, custom_models     the data and the method (not each other)
    custom_runs                        running configurations
    custom_reports                     tables, figures, the suspects report
    custom_cli                         the commands' parsers and mains
    (the scripts, bench/ and tests/ stand on top and are not checked here)
"""
import ast
import textwrap
from pathlib import Path
from typing import Dict, List, Set, Tuple

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {"custom_common": 0, "custom_transforms": 1, "custom_datasets": 2, "custom_models": 2,
          "custom_runs": 3, "custom_reports": 4, "custom_cli": 5}
PROJECT_PREFIX = "custom_"


def package_modules(root: Path) -> Dict[str, Path]:
    """Dotted module name -> file, for every .py file of the project's packages under root."""
    modules = {}
    for package in sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(PROJECT_PREFIX)):
        for path in sorted(package.rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _resolve(name: str, modules: Dict[str, Path]) -> str:
    """The longest known module that `name` (a module, or a name inside one) lies in."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return name


def imports_of(module: str, path: Path, modules: Dict[str, Path]) -> List[Tuple[int, str]]:
    """(line, imported project module) for every import in the file, at any depth (a
    function-level import counts as much as one at the top)."""
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's own package upwards
                anchor = module.split(".")[:len(module.split(".")) - node.level + is_package]
                base = ".".join(anchor + ([base] if base else []))
            # `from package import module` names a module; `from module import name` a name
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                     for alias in node.names]
        else:
            continue
        found += [(node.lineno, _resolve(name, modules)) for name in names
                  if name.split(".")[0].startswith(PROJECT_PREFIX)]
    return found


def import_graph(root: Path) -> Dict[str, Dict[str, int]]:
    """Module -> {imported project module: line of the first such import}."""
    modules = package_modules(root)
    graph = {}
    for module, path in modules.items():
        edges = {}
        for line, target in imports_of(module, path, modules):
            if target != module:
                edges.setdefault(target, line)
        graph[module] = edges
    return graph


def layer_violations(root: Path) -> List[str]:
    """'file:line imports module' for every import of a package that is not below the
    importer's own (its own package is fine), and of any project package of no layer."""
    modules = package_modules(root)
    violations = []
    for module, edges in import_graph(root).items():
        package = module.split(".")[0]
        for target, line in sorted(edges.items()):
            other = target.split(".")[0]
            allowed = other == package or (package in LAYERS and other in LAYERS
                                           and LAYERS[other] < LAYERS[package])
            if not allowed:
                violations.append(f"{modules[module].relative_to(root)}:{line} imports {target}")
    return violations


def import_cycles(root: Path) -> List[List[str]]:
    """Every strongly connected group of two or more modules (Tarjan), each sorted."""
    graph = import_graph(root)
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    groups = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, {}):
            if target not in graph:
                continue
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(groups)


def test_every_package_imports_only_its_own_modules_and_the_layers_below():
    assert layer_violations(ROOT) == []


def test_no_modules_import_each_other_in_a_circle():
    assert import_cycles(ROOT) == []


def test_every_package_has_a_layer_and_the_graph_sees_function_level_imports():
    graph = import_graph(ROOT)
    assert {module.split(".")[0] for module in graph} == set(LAYERS)
    # a top-level import, and one made inside a method (the --plot-debug grid)
    assert "custom_models.training" in graph["custom_runs.experiment"]
    assert "custom_runs.augment_grid" in graph["custom_runs.experiment"]


def write_tree(root: Path, files: Dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def test_an_import_of_a_higher_layer_and_a_circle_are_both_found(tmp_path):
    write_tree(tmp_path, {
        "custom_common/__init__.py": "",
        "custom_common/settings.py": "import json\n",
        "custom_datasets/__init__.py": "",
        "custom_datasets/folder.py": "from custom_datasets.sources import load\n",
        "custom_datasets/sources.py": """\
            from custom_common import settings


            def load():
                from . import folder
                from custom_runs import run_files
            """,
        "custom_runs/__init__.py": "",
        "custom_runs/run_files.py": "import custom_common.settings\n",
    })
    assert layer_violations(tmp_path) == ["custom_datasets/sources.py:6 imports custom_runs.run_files"]
    assert import_cycles(tmp_path) == [["custom_datasets.folder", "custom_datasets.sources"]]
    assert import_graph(tmp_path)["custom_runs.run_files"] == {"custom_common.settings": 1}


# a module a newcomer reads in one sitting: past this, it holds more than one concern
MAX_MODULE_LINES = 450


def long_modules(root: Path) -> List[str]:
    """'path: lines' of every Python file outside tests/ (the packages, bench/, the scripts)
    longer than MAX_MODULE_LINES."""
    files = [path for path in root.rglob("*.py")
             if not {"tests", ".venv", "build", ".git"} & set(path.relative_to(root).parts)]
    lengths = {path: len(path.read_text().splitlines()) for path in files}
    return [f"{path.relative_to(root)}: {lines}" for path, lines in sorted(lengths.items())
            if lines > MAX_MODULE_LINES]


def test_no_module_outside_the_tests_is_longer_than_the_limit():
    assert long_modules(ROOT) == []


def test_a_long_module_is_found_wherever_it_lies(tmp_path):
    write_tree(tmp_path, {
        "custom_runs/table/local.py": "x = 1\n" * (MAX_MODULE_LINES + 1),
        "bench/short.py": "x = 1\n" * MAX_MODULE_LINES,
        "tests/test_long.py": "x = 1\n" * 1000,
        "run-table.py": "x = 1\n" * 500,
    })
    assert long_modules(tmp_path) == [f"custom_runs/table/local.py: {MAX_MODULE_LINES + 1}",
                                      "run-table.py: 500"]

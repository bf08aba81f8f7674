"""The layers flow one way and nothing imports in a cycle, function-level imports included.

processing (record I/O, signals, concepts, reports) <- datasets_scripts (builders) and
modeling_supreme (model, pipeline) <- modeling_supreme.evaluation <- modeling_supreme.training <- examples.
The files a checkpoint ships as remote code import only their siblings.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("processing", "datasets_scripts", "modeling_supreme")
# The files copied next to every saved checkpoint (auto_map / custom_pipelines refer to them by name).
REMOTE_CODE = {
    "modeling_supreme": ("configuration_supreme", "modeling_supreme", "pipeline_supreme"),
    "processing.ecg": ("ecg_leads", "wfdb_reader", "feature_extraction_supreme", "processing_supreme"),
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _project_modules() -> dict:
    return {_module_name(p): p for package in PACKAGES for p in (REPO / package).rglob("*.py")}


def _optional(node: ast.AST, parents: dict) -> bool:
    """Is this import inside a ``try`` whose handler catches ImportError (an optional dependency)?"""
    while node in parents:
        parent = parents[node]
        if isinstance(parent, ast.Try) and node in parent.body:
            names = []
            for handler in parent.handlers:
                kinds = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
                names += [getattr(k, "id", getattr(k, "attr", "")) for k in kinds if k is not None]
            if {"ImportError", "ModuleNotFoundError"} & set(names):
                return True
        node = parent
    return False


def _imports(module: str, path: Path, modules: dict):
    """``(target module, relative, optional)`` for every import statement anywhere in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [(alias.name, False) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module
            names = [(f"{prefix}.{alias.name}", node.level > 0) for alias in node.names]
            names.append((prefix, node.level > 0))
        else:
            continue
        for name, relative in names:
            if name.split(".")[0] not in PACKAGES:
                continue
            while name and name not in modules:  # `from pkg import name` names an attribute, not a module
                name = name.rpartition(".")[0]
            if name and name != module:
                yield name, relative, _optional(node, parents)


@pytest.fixture(scope="module")
def graph():
    modules = _project_modules()
    return {m: sorted(set(_imports(m, p, modules))) for m, p in modules.items()}


def test_no_import_cycles(graph):
    edges = {m: {target for target, _, _ in targets} for m, targets in graph.items()}
    index, low, on_stack, stack, cycles, counter = {}, {}, set(), [], [], [0]

    def visit(node):  # Tarjan's strongly connected components
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
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
                cycles.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    assert not cycles, f"import cycles: {cycles}"


def _layer(module: str) -> str:
    for prefix in ("modeling_supreme.training", "modeling_supreme.evaluation"):
        if module == prefix or module.startswith(prefix + "."):
            return prefix
    return module.split(".")[0]


# Which layers each layer may import.
ALLOWED = {
    "processing": {"processing"},
    "datasets_scripts": {"processing", "datasets_scripts"},
    "modeling_supreme": {"processing", "modeling_supreme"},
    "modeling_supreme.evaluation": {"processing", "datasets_scripts", "modeling_supreme", "modeling_supreme.evaluation"},
    "modeling_supreme.training": {"processing", "datasets_scripts", "modeling_supreme", "modeling_supreme.evaluation",
                                  "modeling_supreme.training"},
}


def test_layers_flow_one_way(graph):
    wrong = [(m, t) for m, targets in graph.items() for t, _, _ in targets if _layer(t) not in ALLOWED[_layer(m)]]
    assert not wrong, f"imports against the layer order: {wrong}"


def test_the_model_package_imports_no_evaluation_training_or_dataset_code(graph):
    for module, targets in graph.items():
        if _layer(module) == "modeling_supreme":
            bad = [t for t, _, _ in targets if _layer(t) != "processing" and _layer(t) != "modeling_supreme"]
            assert not bad, (module, bad)


@pytest.mark.parametrize("package", sorted(REMOTE_CODE))
def test_remote_code_files_import_only_their_siblings(graph, package):
    siblings = {f"{package}.{name}" for name in REMOTE_CODE[package]}
    for name in REMOTE_CODE[package]:
        for target, relative, optional in graph[f"{package}.{name}"]:
            if optional:
                continue  # e.g. the configuration's offline text-encoder resolver, absent as remote code
            assert target in siblings and relative, f"{package}.{name} imports {target}: remote code may import only its siblings, relatively"


def test_import_modeling_supreme_stays_light():
    code = (
        "import sys, modeling_supreme\n"
        "heavy = [m for m in sys.modules if m.startswith(('modeling_supreme.evaluation', 'modeling_supreme.training',"
        " 'datasets_scripts', 'processing.reports', 'sklearn', 'matplotlib', 'datasets'))]\n"
        "print(heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]", result.stdout


def test_no_sys_path_edits():
    offenders = []
    for folder in (*PACKAGES, "examples", "benchmarks", "tests"):
        for path in (REPO / folder).rglob("*.py"):
            if path.resolve() == Path(__file__).resolve():
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if isinstance(node, ast.Attribute) and node.attr == "path" and getattr(node.value, "id", "") == "sys":
                    parent_calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)
                                    and isinstance(n.func, ast.Attribute) and n.func.value is node]
                    assigned = [n for n in ast.walk(tree) if isinstance(n, ast.Assign)
                                and any(t is node for t in n.targets)]
                    if parent_calls or assigned:
                        offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not offenders, f"sys.path edits: {offenders}"

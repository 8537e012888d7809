"""Rules of the code base that a reviewer would otherwise have to remember.

- A service module never calls another service module's private (underscore) function.
- Services never import ``flask.request``: they take plain data.
- Core code never tests a module type by its id: capabilities are declared on the class.
"""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
SERVICES = sorted((ROOT / "app" / "services").glob("*.py"))
CORE = [*SERVICES, *(ROOT / "app").glob("*.py"), *(ROOT / "app" / "api").glob("*.py")]


def _service_names(tree):
    """Names bound to app.services modules in a module (module-level or local imports)."""
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "app.services":
            for alias in node.names:
                names[alias.asname or alias.name] = alias.name
    return names


def test_no_service_calls_another_services_private_function():
    found = []
    for path in SERVICES:
        tree = ast.parse(path.read_text())
        services = _service_names(tree)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in services
                and node.attr.startswith("_")
                and services[node.value.id] != path.stem
            ):
                found.append(f"{path.name}:{node.lineno} {node.value.id}.{node.attr}")
    assert found == []


def test_services_never_import_the_request():
    found = []
    for path in SERVICES:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "flask":
                found += [f"{path.name}:{node.lineno}" for a in node.names if a.name == "request"]
    assert found == []


def test_core_code_never_tests_a_module_type_by_its_id():
    """``module.type == "http"`` in core code is a capability that was not declared."""
    found = []
    for path in CORE:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Compare) and any(
                isinstance(side, ast.Attribute) and side.attr == "type"
                for side in [node.left, *node.comparators]
            ):
                constants = [c for c in node.comparators if isinstance(c, ast.Constant)]
                if any(c.value in ("http", "manual", "sandbox") for c in constants):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert found == []

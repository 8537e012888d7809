"""The layout rules of the tests: shared fixtures live in conftest.py, shared helpers in
tests/support.py; no test module imports another, and the benchmarks use only
tests/support.py."""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent


def imported_tests_modules(path):
    """The ``tests.*`` modules ``path`` imports (``from tests import x`` counts as
    ``tests.x``), with the line of each import."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names if a.name.startswith("tests.")]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "tests":
                found += [(f"tests.{a.name}", node.lineno) for a in node.names]
            elif node.module.startswith("tests."):
                found.append((node.module, node.lineno))
    return found


def test_no_test_module_imports_another():
    offenders = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in sorted((ROOT / "tests").rglob("*.py"))
        for name, line in imported_tests_modules(path)
        if name.rpartition(".")[2].startswith("test_")
    ]
    assert offenders == []


def test_benchmarks_import_only_tests_support():
    offenders = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in sorted((ROOT / "bench").rglob("*.py"))
        for name, line in imported_tests_modules(path)
        if name != "tests.support"
    ]
    assert offenders == []


def test_the_check_sees_every_form_of_import(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import tests.test_web\nfrom tests import test_browser as base, support\n"
        "from tests.test_proxy import Instance\nfrom tests.support import wait_for\n"
        "def f():\n    import tests.test_cli\n"
    )
    assert [name for name, _ in imported_tests_modules(sample)] == [
        "tests.test_web",
        "tests.test_browser",
        "tests.support",
        "tests.test_proxy",
        "tests.support",
        "tests.test_cli",
    ]

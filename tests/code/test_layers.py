"""The package's layers: the import-linter contracts (run by scripts/test.sh) cover every module."""

import ast
import pkgutil
import tomllib
from pathlib import Path

import melanoma
from tests.conftest import REPO

SERVICES = {"worker", "producer", "trainer", "viewer"}


def _contracts() -> list[dict]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def test_the_contracts_name_every_folder_and_module():
    """Every folder and module of melanoma/ sits in exactly one layer, and the core contract covers all but
    the services: a new folder cannot slip past the layering."""
    contracts = _contracts()
    core = next(c for c in contracts if c["name"] == "The shared core never imports a service")
    layers = next(c for c in contracts if c["type"] == "layers")
    modules = {m.name for m in pkgutil.iter_modules(melanoma.__path__)}
    assert SERVICES <= modules  # the services are importable under the melanoma namespace
    assert set(core["source_modules"]) == {f"melanoma.{m}" for m in modules - SERVICES}
    assert set(core["forbidden_modules"]) == {f"melanoma.{s}" for s in SERVICES}
    in_layers = [name.strip() for layer in layers["layers"] for name in layer.split("|")]
    assert sorted(in_layers) == sorted(f"melanoma.{m}" for m in modules)


def test_each_folder_of_the_core_is_a_package_with_a_purpose():
    """Each folder under melanoma/ says in its docstring what it is for, and holds no module so long
    that its parts should be modules of their own (about 300 lines at most)."""
    for folder in sorted(p for p in Path(melanoma.__path__[0]).iterdir() if (p / "__init__.py").is_file()):
        doc = ast.get_docstring(ast.parse((folder / "__init__.py").read_text()))
        assert doc and len(doc) > 40, folder.name
        for module in folder.rglob("*.py"):
            if "migrations" in module.parts:
                continue
            lines = len(module.read_text().splitlines())
            assert lines <= 320, f"{module.relative_to(REPO)} has {lines} lines"


def test_no_generic_top_level_service_packages_are_installed():
    """Only ``melanoma`` is a distribution package; worker/, producer/ and trainer/ are entry-point
    folders of the checkout (pyproject's package list says so)."""
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    assert cfg["include"] == ["melanoma*"]
    for service in SERVICES - {"viewer"}:  # the viewer's entry point is `melanoma serve`
        names = sorted(p.name for p in (REPO / service).iterdir() if p.suffix == ".py")
        assert set(names) <= {"__init__.py", "__main__.py", "celery.py"}, (service, names)

"""The package's layers: the import-linter contracts (run by scripts/test.sh) cover every module."""

import pkgutil
import tomllib

import melanoma
from tests.conftest import REPO

SERVICES = {"worker", "producer", "trainer", "viewer"}


def test_the_core_contract_names_every_core_module():
    contracts = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    core = next(c for c in contracts if c["name"] == "The shared core never imports a service")
    modules = {m.name for m in pkgutil.iter_modules(melanoma.__path__)}
    assert SERVICES <= modules  # the services are importable under the melanoma namespace
    assert set(core["source_modules"]) == {f"melanoma.{m}" for m in modules - SERVICES}
    assert set(core["forbidden_modules"]) == {f"melanoma.{s}" for s in SERVICES}


def test_no_generic_top_level_service_packages_are_installed():
    """Only ``melanoma`` is a distribution package; worker/, producer/ and trainer/ are entry-point
    folders of the checkout (pyproject's package list says so)."""
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    assert cfg["include"] == ["melanoma*"]
    for service in SERVICES - {"viewer"}:  # the viewer's entry point is `melanoma serve`
        names = sorted(p.name for p in (REPO / service).iterdir() if p.suffix == ".py")
        assert set(names) <= {"__init__.py", "__main__.py", "celery.py"}, (service, names)

"""The ``melanoma`` entry point itself (the commands are tested with their services, in tests/e2e)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO


@pytest.mark.parametrize(("argv", "status"), [(["--help"], 0), (["no-such-command"], 2)])
def test_main_freezes_what_is_alive_before_python_exits(argv, status):
    """Python's shutdown then skips walking every object the imports made (0.1-0.2 s of each
    short command); whichever way the command ends, success or a usage error."""
    code = (
        "import atexit, gc\n"
        "from melanoma.cli import main\n"
        "atexit.register(lambda: print('frozen objects:', gc.get_freeze_count()))\n"
        f"main({argv!r})\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert r.returncode == status, r.stderr
    frozen = int(r.stdout.strip().rsplit(":", 1)[1])
    assert frozen > 10_000  # the objects of click and the imported command modules


def _run(code: str) -> str:
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


@pytest.mark.parametrize("preloaded", [False, True])
def test_preload_imports_without_collections_and_resumes_them(preloaded):
    """Plain, SQLAlchemy's import runs the collector dozens of times; through preload not once,
    what it made ends frozen and collection is on again afterwards."""
    code = (
        "import gc\n"
        "from melanoma.core.startup import preload\n"
        "runs = []\n"
        "gc.callbacks.append(lambda phase, info: runs.append(phase) if phase == 'start' else None)\n"
        f"preload('sqlalchemy.orm') if {preloaded} else __import__('sqlalchemy.orm')\n"
        "gc.callbacks.clear()\n"
        "import sys\n"
        "print(len(runs), gc.isenabled(), gc.get_freeze_count(), 'sqlalchemy.orm' in sys.modules)\n"
    )
    runs, enabled, frozen, imported = _run(code).split()
    assert enabled == "True" and imported == "True"
    if preloaded:
        assert int(runs) == 0 and int(frozen) > 10_000
    else:
        assert int(runs) > 10 and int(frozen) == 0


def test_preload_resumes_collection_when_an_import_fails_and_leaves_it_off_if_it_was():
    code = (
        "import gc\n"
        "from melanoma.core.startup import preload\n"
        "try:\n"
        "    preload('no_such_module_here')\n"
        "except ModuleNotFoundError:\n"
        "    print(gc.isenabled())\n"
        "gc.disable()\n"
        "preload('json')\n"
        "print(gc.isenabled())\n"
    )
    assert _run(code).split() == ["True", "False"]


def test_commands_are_the_entry_points_and_load_when_run():
    """Every entry point of melanoma.commands is a command; naming one loads its module alone."""
    code = (
        "import sys, click\n"
        "from importlib.metadata import entry_points\n"
        "from melanoma.cli import COMMAND_GROUP, cli\n"
        "ctx = click.Context(cli)\n"
        "assert not any(m.startswith('melanoma.producer') for m in sys.modules)\n"
        "assert isinstance(cli.get_command(ctx, 'submit'), click.Command)\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(('melanoma.producer', 'melanoma.worker', "
        "'melanoma.trainer')))\n"
        "assert loaded == ['melanoma.producer', 'melanoma.producer.cli'], loaded\n"
        "assert cli.get_command(ctx, 'no-such-command') is None\n"
        "names = sorted(e.name for e in entry_points(group=COMMAND_GROUP))\n"
        "assert cli.list_commands(ctx) == names, (cli.list_commands(ctx), names)\n"
        "assert all(isinstance(cli.get_command(ctx, n), click.Command) for n in names)\n"
        "print('ok')\n"
    )
    assert _run(code) == "ok"

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

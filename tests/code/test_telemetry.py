"""The worker's metrics folder: a temporary one lives as long as the process that made it."""

import os
import subprocess
import sys
import textwrap

from tests.conftest import REPO

# Makes the folder, forks a child that exits through sys.exit (running the inherited atexit
# handlers, as a pool process could), and reports whether the folder outlived the child.
SCRIPT = textwrap.dedent(
    """
    import os, sys
    from melanoma.pipeline import telemetry
    path = telemetry.prepare_multiprocess_dir()
    open(os.path.join(path, "counter_1.db"), "w").close()
    pid = os.fork()
    if pid == 0:
        sys.exit(0)
    os.waitpid(pid, 0)
    print(path, os.path.isdir(path), os.environ["PROMETHEUS_MULTIPROC_DIR"] == path)
    """
)


def run(tmp_path, **env: str) -> list[str]:
    full = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    full.update(TMPDIR=str(tmp_path), PYTHONPATH=str(REPO), **env)
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=full, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_a_temporary_folder_outlives_forked_children_and_goes_with_its_process(tmp_path):
    path, alive_after_child, exported = run(tmp_path)
    assert os.path.dirname(path) == str(tmp_path) and os.path.basename(path).startswith("melanoma-metrics-")
    assert alive_after_child == "True" and exported == "True"
    assert not os.path.exists(path)
    assert list(tmp_path.iterdir()) == []


def test_a_named_folder_is_kept_and_emptied_of_old_samples(tmp_path):
    named = tmp_path / "metrics"
    named.mkdir()
    (named / "gauge_liveall_9.db").write_bytes(b"old")
    (named / "notes.txt").write_text("kept")
    path, alive_after_child, _ = run(tmp_path, PROMETHEUS_MULTIPROC_DIR=str(named))
    assert path == str(named) and alive_after_child == "True"
    assert sorted(p.name for p in named.iterdir()) == ["counter_1.db", "notes.txt"]

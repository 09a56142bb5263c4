"""The CLI's answers to user mistakes: one line on stderr, exit status 1, never a traceback."""

import re
import subprocess
import sys

import pytest

from tests.conftest import REPO, free_port, run_cli, service_env

# Real CLI processes against a real redis-server (and a worker for ping).
pytestmark = pytest.mark.e2e


def assert_one_line_error(r, pattern):
    assert r.returncode == 1, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert lines[0].startswith("melanoma: error: ")
    assert re.search(pattern, lines[0]), lines[0]


@pytest.fixture
def env(tmp_path, redis_url, sqlite_url, shipped_model_dir):
    return service_env(tmp_path, sqlite_url, redis_url, shipped_model_dir, [tmp_path])


def test_missing_folder(env, tmp_path):
    assert_one_line_error(run_cli(["submit", str(tmp_path / "nope")], env), r"folder not found: .*nope")


def test_not_a_folder(env, tmp_path):
    (tmp_path / "file.jpg").write_bytes(b"x")
    assert_one_line_error(run_cli(["submit", str(tmp_path / "file.jpg")], env), r"not a folder")


def test_folder_without_images(env, tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "notes.txt").write_text("x")
    assert_one_line_error(run_cli(["submit", str(tmp_path / "empty")], env), r"no image files .* under")


def test_unknown_job(env):
    assert_one_line_error(run_cli(["status", "0123456789abcdef"], env), r"unknown job id")
    assert_one_line_error(run_cli(["results", "deadbeef"], env), r"unknown job id")


def test_unknown_class(env, tmp_path):
    from tests.conftest import copy_images

    copy_images(tmp_path / "imgs", 1, ["nevus"])
    r = run_cli(["submit", str(tmp_path / "imgs")], env)
    assert r.returncode == 0, r.stderr
    job = r.stdout.strip().splitlines()[-1]
    assert_one_line_error(run_cli(["results", job, "--class", "freckle"], env), r"unknown class 'freckle'")
    # a unique prefix of the id is enough
    st = run_cli(["status", job[:8]], env)
    assert st.returncode == 0 and job in st.stdout and "1 pending" in st.stdout


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (
            ["--recipe", "robust", "--train-from-block", "5"],
            r"--train-from-block: recipe robust has no pretrained backbone",
        ),
        (["--recipe", "robust", "--backbone", "lite1"], r"--backbone: recipe robust has no pretrained backbone"),
        (["--recipe", "origin", "--image-size", "260"], r"--image-size: recipe origin has no pretrained backbone"),
        (["--recipe", "pretrained", "--train-from-block", "16"], r"--train-from-block: lite0 has blocks 0-15"),
        (["--recipe", "pretrained", "--backbone", "lite2", "--train-from-block", "21"], r"lite2 has blocks 0-20"),
    ],
)
def test_backbone_options_need_a_pretrained_backbone(env, tmp_path, args, error):
    from tests.conftest import copy_images

    copy_images(tmp_path / "data", 2, ["nevus", "melanoma"])
    assert_one_line_error(run_cli(["train", "--data", str(tmp_path / "data"), *args], env), error)


@pytest.mark.parametrize(
    "command",
    [
        ["train"],
        ["ensemble", "a", "b"],
        ["models", "promote", "a"],
        ["evaluate", "current", "--split-of", "a"],
        ["calibrate-familiarity", "current"],
    ],
    ids=lambda c: c[0],
)
def test_every_data_option_names_a_missing_folder(env, tmp_path, command):
    from tests.conftest import copy_images

    copy_images(tmp_path / "data", 1, ["nevus"])
    missing = ["--data", str(tmp_path / "data"), "--data", str(tmp_path / "nope")]
    assert_one_line_error(run_cli([*command, *missing], env), r"data folder not found: .*nope$")
    (tmp_path / "file.jpg").write_bytes(b"x")
    assert_one_line_error(run_cli([*command, "--data", str(tmp_path / "file.jpg")], env), r"not a folder: .*file\.jpg$")


def test_unreachable_broker(env, tmp_path):
    from tests.conftest import copy_images

    copy_images(tmp_path / "imgs", 1, ["nevus"])
    env = dict(env, MELANOMA_BROKER_URL=f"redis://127.0.0.1:{free_port()}/0")
    assert_one_line_error(
        run_cli(["submit", str(tmp_path / "imgs")], env, timeout=60), r"cannot reach the broker redis://127\.0\.0\.1"
    )


def test_unreachable_database(env):
    env = dict(env, MELANOMA_DATABASE_URL=f"postgresql+psycopg://u:secret@127.0.0.1:{free_port()}/x")
    r = run_cli(["status", "0123456789abcdef"], env, timeout=60)
    assert_one_line_error(r, r"cannot use the database postgresql\+psycopg://u:\*\*\*@127\.0\.0\.1")
    assert "secret" not in r.stderr


def test_bad_setting(env):
    assert_one_line_error(run_cli(["status", "abc"], dict(env, MELANOMA_BATCH_SIZE="lots")), r"MELANOMA_BATCH_SIZE")


def test_worker_without_a_model(env, tmp_path):
    assert_one_line_error(
        run_cli(["worker"], dict(env, MELANOMA_MODEL_DIR=str(tmp_path / "none")), timeout=60),
        r"no current model version",
    )


def test_ping_is_a_worker_health_check(env, start_worker):
    worker = start_worker(env, name="ping")
    r = run_cli(["ping", "--node", worker.node, "--timeout", "5"], env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"{worker.node}: pong"
    # The default node is celery@<this host>; no worker here has that name.
    assert_one_line_error(
        run_cli(["ping", "--timeout", "1"], env), r"worker celery@\S+ did not answer a ping within 1 s"
    )


def test_producer_never_imports_tensorflow_or_celery(env, tmp_path):
    """TensorFlow would cost seconds, Celery and kombu a third of a second of every submit; the
    worker's and trainer's command modules are not loaded either, and the garbage collector that
    start-up paused runs again."""
    from tests.conftest import copy_images

    copy_images(tmp_path / "imgs", 1, ["melanoma"])
    code = (
        "import sys\n"
        "from melanoma.cli import cli\n"
        f"cli.main(['submit', {str(tmp_path / 'imgs')!r}], standalone_mode=False)\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'TensorFlow was imported'\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('celery', 'kombu'))\n"
        "assert not heavy, heavy\n"
        "others = sorted(m for m in sys.modules if m.startswith(('melanoma.worker', 'melanoma.trainer')))\n"
        "assert not others, others\n"
        "import gc\n"
        "assert gc.isenabled(), 'garbage collection left paused'\n"
        "print('clean')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=REPO, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("clean")


def _submitted(env, folder) -> str:
    r = run_cli(["submit", str(folder)], env)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip().splitlines()[-1]


def _score_in_process(env, folder, job) -> None:
    """Write the job's rows as a worker would (its Scorer, a deterministic stand-in model), so that the
    commands below read real results without a TensorFlow worker."""
    from melanoma.core.settings import Settings
    from melanoma.pipeline.scoring import Scorer
    from melanoma.store import db, jobs
    from tests.code.test_scoring import PixelPredictor

    engine = db.make_engine(env["MELANOMA_DATABASE_URL"])
    with db.session_scope(engine) as s:
        ids = jobs.pending_ids(s, jobs.find_job(s, job))
    Scorer(engine, PixelPredictor(), Settings(allowed_roots=(folder,))).score(ids)


def test_results_table_csv_file_and_filters(env, tmp_path):
    import csv
    import json

    from melanoma.store.jobs import RESULT_COLUMNS
    from tests.conftest import copy_images

    folder = tmp_path / "imgs"
    copy_images(folder, 3, ["melanoma", "nevus", "vascular lesion"])
    (folder / "nevus" / "broken.jpg").write_bytes(b"not a jpeg")
    job = _submitted(env, folder)
    _score_in_process(env, folder, job)
    every = json.loads(run_cli(["results", job, "--format", "json"], env).stdout)
    assert len(every) == 10 and sum(r["status"] == "error" for r in every) == 1

    table = run_cli(["results", job], env)  # no --format: the table
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:3] == ["image", "status", "predicted"] and set(lines[1]) == {"-"}
    assert len(lines) == 2 + len(every) and sum("not an image" in line for line in lines) == 1

    out = tmp_path / "out.csv"
    written = run_cli(["results", job, "--format", "csv", "-o", str(out)], env)
    assert written.returncode == 0 and written.stdout == ""
    with out.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == list(RESULT_COLUMNS)
    assert [r["image_path"] for r in rows] == [r["image_path"] for r in every]

    def picked(*args: str) -> list[str]:
        r = run_cli(["results", job, "--format", "json", *args], env)
        assert r.returncode == 0, r.stderr
        return [row["image_path"] for row in json.loads(r.stdout)]

    ok = [r for r in every if r["status"] == "ok"]
    cut = sorted(r["p_melanoma"] for r in ok)[len(ok) // 2]
    assert picked("--class", "melanoma", "--min-prob", str(cut)) == [
        r["image_path"] for r in ok if r["p_melanoma"] >= cut
    ]
    assert picked("--class", "nevus") == [r["image_path"] for r in ok if r["predicted_class"] == "nevus"]
    top = sorted(r["confidence"] for r in ok)[len(ok) // 2]
    assert picked("--min-prob", str(top)) == [r["image_path"] for r in ok if r["confidence"] >= top]


def test_an_ambiguous_job_id_prefix_asks_for_more(env, tmp_path):
    from melanoma.store import db
    from melanoma.store.schema import Job

    engine = db.make_engine(env["MELANOMA_DATABASE_URL"])
    db.ensure_schema(engine)
    with db.session_scope(engine) as s:
        for suffix in ("01", "02"):
            s.add(Job(id="abcdef" + suffix + "0" * 24, root=str(tmp_path), n_images=0))
    assert_one_line_error(run_cli(["status", "abcdef"], env), r"prefix 'abcdef' matches several jobs")
    st = run_cli(["status", "abcdef02"], env)
    assert st.returncode == 0 and "abcdef02" in st.stdout


def test_submit_wait_gives_up_after_its_timeout(env, tmp_path):
    from tests.conftest import copy_images

    copy_images(tmp_path / "imgs", 1, ["nevus"])
    r = run_cli(["submit", str(tmp_path / "imgs"), "--wait", "--timeout", "1"], env)  # no worker runs
    assert r.returncode == 1 and "Traceback" not in r.stderr
    queued, error = r.stderr.strip().splitlines()  # what was queued, then why it stopped waiting
    assert re.fullmatch(r"job [0-9a-f]{32}: 1 images queued", queued)
    assert re.fullmatch(r"melanoma: error: job [0-9a-f]{32} not finished after 1 s: 1 images still pending", error)

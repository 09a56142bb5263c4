"""The results viewer against the real stack: redis-server, a real worker scoring a real job
(real images and the hostile corpus), `melanoma serve` as its own process, plain HTTP and a real
headless Chromium (Debian's chromium + chromium-driver, driven by Selenium)."""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from melanoma.store import db
from melanoma.store.schema import Heatmap
from tests.conftest import (
    MELANOMA,
    REPO,
    TEST_IMAGES,
    Worker,
    _missing,
    free_port,
    run_cli,
    service_env,
    submit,
    wait_complete,
)
from tests.e2e.test_familiarity import write_photos
from tests.hostile import make_corpus

pytestmark = pytest.mark.e2e
HOSTILE_NAME = "<img src=x onerror=alert(1)>.jpg"


class Server:
    """A real `melanoma serve` process."""

    def __init__(self, env: dict[str, str], log: Path, *args: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = open(log, "w")
        self.log_path = log
        started = time.monotonic()
        self.proc = subprocess.Popen(
            MELANOMA + ["serve", "--port", str(self.port), *args],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
        while True:
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() - started > 60:
                raise AssertionError("viewer did not start:\n" + log.read_text())
            time.sleep(0.05)
        self.start_s = time.monotonic() - started

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self._log.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, redis_url, shipped_model_dir):
    tmp = tmp_path_factory.mktemp("viewer")
    folder = tmp / "clinic"
    for cls in ("melanoma", "nevus", "basal cell carcinoma", "fullres"):
        for src in sorted((TEST_IMAGES / cls).rglob("*.jpg"))[:3]:
            dest = folder / cls.replace(" ", "_") / src.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dest)
    shutil.copy(next((TEST_IMAGES / "nevus").glob("*.jpg")), folder / HOSTILE_NAME)
    corpus = make_corpus(folder / "hostile", next((TEST_IMAGES / "melanoma").glob("*.jpg")), tmp / "outside")
    photos = write_photos(folder / "holiday")[:2]  # not skin lesions: the familiarity badge and filter
    env = service_env(
        tmp,
        f"sqlite:///{tmp / 'melanoma.db'}",
        redis_url,
        shipped_model_dir,
        [folder],
        MELANOMA_CACHE_DIR=str(tmp / "cache"),
        MELANOMA_UNFAMILIAR_WARN_SHARE="0.05",
    )
    worker = Worker(env, tmp / "worker.log")
    server = None
    try:
        worker.wait_ready()
        job = submit(env, folder, "--name", "viewer test")
        status = wait_complete(env, job)
        server = Server(env, tmp / "serve.log")
        yield {
            "env": env,
            "url": server.url,
            "job": job,
            "status": status,
            "tmp": tmp,
            "corpus": corpus,
            "photos": photos,
            "server": server,
            "worker": worker,
        }
    finally:
        if server is not None:
            server.stop()
        worker.stop()


def _get(stack, path: str, **kw) -> httpx.Response:
    return httpx.get(stack["url"] + path, timeout=30, **kw)


def test_jobs_grid_and_downloads(stack):
    st, job = stack["status"], stack["job"]
    home = _get(stack, "/")
    assert home.status_code == 200 and f'href="/jobs/{job}"' in home.text and "viewer test" in home.text
    listing = _get(stack, "/jobs.json").json()
    assert listing[0]["id"] == job and listing[0]["total"] == st["total"] and listing[0]["pending"] == 0

    csv_rows = list(csv.DictReader(io.StringIO(_get(stack, f"/jobs/{job}/results.csv").text)))
    assert len(csv_rows) == st["total"] and sum(r["status"] == "error" for r in csv_rows) == st["failed"]
    assert json.loads(_get(stack, f"/jobs/{job}/results.json").text) == [
        json.loads(json.dumps(r)) for r in _as_json(stack["env"], job)
    ]

    page = _get(stack, f"/jobs/{job}")
    assert page.status_code == 200
    # Default order: P(melanoma) descending, errors after the scored images.
    scored = sorted((r for r in csv_rows if r["status"] == "ok"), key=lambda r: -float(r["p_melanoma"]))
    first_name = scored[0]["image_path"].rsplit("/", 1)[-1]
    assert page.text.index(first_name) < page.text.index(scored[-1]["image_path"].rsplit("/", 1)[-1])
    assert f"{st['total']} images match" in page.text
    # A file name is text, never markup (autoescaped; the CSP would block it anyway).
    assert HOSTILE_NAME not in page.text and "&lt;img src=x onerror=alert(1)&gt;.jpg" in page.text


def _as_json(env, job):
    r = run_cli(["results", job, "--format", "json"], env)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _count(text: str) -> int:
    """The grid's "N images match" figure."""
    found = re.search(r'<p class="count">(\d+) images? match', text)
    assert found, text[:500]
    return int(found.group(1))


def _grid_ids(text: str) -> list[int]:
    """Prediction ids of a grid page, in the order the page shows them."""
    return [int(i) for i in re.findall(r'<a href="/images/(\d+)', text)]


def test_filters_and_keyset_pages(stack):
    job, st = stack["job"], stack["status"]
    errors = _get(stack, f"/jobs/{job}?errors=1")
    assert _count(errors.text) == st["failed"] and "thumb.jpg" not in errors.text
    nevi = _get(stack, f"/jobs/{job}?predicted=nevus&sort=p_nevus")
    assert _count(nevi.text) == st["classes"].get("nevus", 0)
    # The path order walked five images a page with the cursors gives every image once, in the
    # CSV's order (the UI shows 60 a page, so the walk uses the same keyset query with smaller pages).
    from melanoma.store.browse import View, page
    from melanoma.store.db import make_engine, session_scope

    walked: list[int] = []
    walked_paths: list[str] = []
    cursor = None
    everything = _ids(stack)
    with session_scope(make_engine(stack["env"]["MELANOMA_DATABASE_URL"])) as s:
        for _ in range(len(everything) // 5 + 2):  # a cursor that does not advance must not loop forever
            part = page(s, job, View.parse({"sort": "path"}), cursor, size=5)
            walked += [r.id for r in part.rows]
            walked_paths += [r.image_path for r in part.rows]
            cursor = part.next_cursor
            if not cursor:
                break
            if len(walked) == 5:
                second = cursor
    assert walked == everything
    downloaded = list(csv.DictReader(io.StringIO(_get(stack, f"/jobs/{job}/results.csv").text)))
    assert walked_paths == [r["image_path"] for r in downloaded]
    # The page a cursor link opens continues the grid exactly where the first five ended.
    link = _get(stack, f"/jobs/{job}?sort=path&after={second}")
    assert link.status_code == 200 and _count(link.text) == len(walked)
    assert _grid_ids(link.text) == walked[5 : 5 + 60]


def test_unfamiliar_images_are_badged_filtered_and_the_job_warns(stack):
    job = stack["job"]
    rows = list(csv.DictReader(io.StringIO(_get(stack, f"/jobs/{job}/results.csv").text)))
    ok = [r for r in rows if r["status"] == "ok"]
    unfamiliar = {r["image_path"] for r in ok if r["unfamiliar"] == "1"}
    assert all(r["familiarity"] != "" for r in ok)
    assert {str(p) for p in stack["photos"]} <= unfamiliar

    page = _get(stack, f"/jobs/{job}").text
    assert page.count('class="badge unfamiliar"') == len(unfamiliar)  # one page holds the whole job
    share = len(unfamiliar) / len(ok)
    assert share > 0.05 and 'id="shift-warning"' in page
    assert f"{share:.0%} of these images look unlike the images this model was validated on" in page

    only = _get(stack, f"/jobs/{job}?unfamiliar=1").text
    assert f"{len(unfamiliar)} image{'s' if len(unfamiliar) != 1 else ''} match" in only
    for r in ok:
        name = html.escape(r["image_path"].rsplit("/", 1)[-1])
        assert (f'<span class="name">{name}</span>' in only) == (r["image_path"] in unfamiliar), name

    progress = _get(stack, f"/jobs/{job}/progress.json").json()
    assert (progress["measured"], progress["unfamiliar"]) == (len(ok), len(unfamiliar))

    ids = dict(zip((r["image_path"] for r in _as_json(stack["env"], job)), _ids(stack)))
    photo = _get(stack, f"/images/{ids[str(stack['photos'][0])]}").text
    assert re.search(r"familiarity percentile <b>(99\.[0-9]|100\.0)</b>", photo), photo[-1500:]
    assert 'class="badge unfamiliar"' in photo


def test_thumbnails_are_made_once_and_only_for_allowed_files(stack):
    job = stack["job"]
    rows = _as_json(stack["env"], job)
    ids = _ids(stack)
    ok = next(p for p, r in zip(ids, rows) if r["status"] == "ok")
    first = _get(stack, f"/images/{ok}/thumb.jpg")
    assert first.status_code == 200 and first.headers["content-type"] == "image/jpeg"
    cached = list((stack["tmp"] / "cache" / "thumbs").rglob("*.jpg"))
    assert cached, "the thumbnail was not cached"
    assert _get(stack, f"/images/{ok}/thumb.jpg").content == first.content
    escape = next(p for p, r in zip(ids, rows) if r["image_path"].endswith("hostile/escape.jpg"))
    refused = _get(stack, f"/images/{escape}/preview.jpg")
    assert refused.status_code == 404 and "outside the allowed roots" in refused.text


def _ids(stack) -> list[int]:
    """Prediction ids in the results' (path) order."""
    from sqlalchemy import select

    from melanoma.store.schema import Prediction

    engine = db.make_engine(stack["env"]["MELANOMA_DATABASE_URL"])
    with db.session_scope(engine) as s:
        return list(
            s.scalars(select(Prediction.id).where(Prediction.job_id == stack["job"]).order_by(Prediction.image_path))
        )


def test_heat_map_is_made_by_the_worker_and_stored_once(stack):
    rows = _as_json(stack["env"], stack["job"])
    pid = next(p for p, r in zip(_ids(stack), rows) if r["status"] == "ok")
    deadline = time.monotonic() + 120
    first = _get(stack, f"/images/{pid}/heatmap.png")
    assert first.status_code in (200, 202)
    while first.status_code == 202 and time.monotonic() < deadline:
        time.sleep(0.5)
        first = _get(stack, f"/images/{pid}/heatmap.png")
    assert first.status_code == 200, first.text
    assert first.content[:8] == b"\x89PNG\r\n\x1a\n" and first.headers["x-explained-class"]
    assert _get(stack, f"/images/{pid}/heatmap.png").content == first.content
    engine = db.make_engine(stack["env"]["MELANOMA_DATABASE_URL"])
    with db.session_scope(engine) as s:
        assert s.query(Heatmap).count() == 1
    error = next(p for p, r in zip(_ids(stack), rows) if r["status"] == "error")
    assert _get(stack, f"/images/{error}/heatmap.png").status_code == 404


def test_heat_map_of_a_changed_file_is_refused_with_the_reason(stack):
    """The worker explains only the content that was scored; the viewer says why there is none."""
    rows = _as_json(stack["env"], stack["job"])
    pid, row = [(p, r) for p, r in zip(_ids(stack), rows) if r["status"] == "ok"][-1]
    path = Path(row["image_path"])
    original = path.read_bytes()
    try:
        path.write_bytes(original + b"edited after scoring")
        deadline = time.monotonic() + 120
        r = _get(stack, f"/images/{pid}/heatmap.png")
        while r.status_code == 202 and time.monotonic() < deadline:
            time.sleep(0.5)
            r = _get(stack, f"/images/{pid}/heatmap.png")
        assert r.status_code == 404 and r.text == "no heat map: the file changed since it was scored\n"
        assert _get(stack, f"/images/{pid}/preview.jpg").status_code == 409
    finally:
        path.write_bytes(original)


def test_hostile_ids_paths_and_values_get_400_or_404(stack):
    job = stack["job"]
    names = [Path(p).name for p in stack["corpus"]] + ["../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "1 OR 1=1", "-1"]
    for name in names:
        quoted = httpx.URL("/").copy_with(path="/images/" + name).raw_path.decode()
        assert _get(stack, quoted).status_code == 404, name
        assert _get(stack, quoted + "/thumb.jpg").status_code == 404, name
        quoted_job = httpx.URL("/").copy_with(path="/jobs/" + name).raw_path.decode()
        assert _get(stack, quoted_job).status_code == 404, name
        for param in ("sort", "order", "predicted", "min_prob", "flagged", "after"):
            r = _get(stack, f"/jobs/{job}", params={param: name})
            assert r.status_code == 400 and "\n" == r.text[-1] and r.text.count("\n") == 1, (param, name)
    assert _get(stack, "/static/..%2F..%2F..%2Fsettings.py").status_code == 404
    assert _get(stack, f"/jobs/{job}", params={"debug": "1"}).status_code == 400
    assert _get(stack, "/images/99999999999").status_code == 404


def test_security_headers_on_every_answer(stack):
    for path in ("/", f"/jobs/{stack['job']}", "/images/nope", "/static/app.js", "/metrics"):
        r = _get(stack, path)
        assert "default-src 'none'" in r.headers["content-security-policy"], path
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
        assert r.headers["x-content-type-options"] == "nosniff" and r.headers["x-frame-options"] == "DENY"
        assert "server" not in r.headers


def test_viewer_metrics(stack):
    _get(stack, "/")
    text = _get(stack, "/metrics").text
    assert 'melanoma_web_requests_total{route="/",status="200"}' in text
    assert "melanoma_web_request_seconds_bucket" in text


def test_starts_quickly_without_tensorflow(stack):
    """The web process never imports TensorFlow, even after serving every kind of page."""
    code = (
        "import sys, time\n"
        "t = time.perf_counter()\n"
        "from starlette.testclient import TestClient\n"
        "from melanoma.viewer.app import create_app\n"
        "c = TestClient(create_app())\n"
        "print(round(time.perf_counter() - t, 2))\n"
        f"for p in ['/', '/jobs/{stack['job']}', '/jobs.json']: assert c.get(p).status_code == 200, p\n"
        "ids = [i for i in range(1, 200) if c.get(f'/images/{i}').status_code == 200][:3]\n"
        "assert ids\n"
        "for i in ids: c.get(f'/images/{i}/thumb.jpg')\n"
        "print('tensorflow' in sys.modules, 'keras' in sys.modules)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], env=stack["env"], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.split()
    assert lines[-2:] == ["False", "False"]
    # The 2-second start-up target is a benchmark figure (bench/viewer.py, docs/performance.md: 1.4 s);
    # 1.8-2.3 s measured here on 2 cores with the test suite running beside it; this bound allows for that.
    assert float(lines[0]) < 5 and stack["server"].start_s < 20


def test_refuses_a_public_address_without_a_password_and_checks_it(stack, tmp_path):
    r = run_cli(["serve", "--host", "0.0.0.0", "--port", "1"], stack["env"])
    assert r.returncode == 1 and "without authentication" in r.stderr and "Traceback" not in r.stderr
    secret = tmp_path / "web_password"
    secret.write_text("correct horse battery\n")
    env = {**stack["env"], "MELANOMA_WEB_PASSWORD_FILE": str(secret)}
    server = Server(env, tmp_path / "serve.log", "--host", "0.0.0.0")
    try:
        url = f"http://127.0.0.1:{server.port}/"
        assert httpx.get(url).status_code == 401
        assert httpx.get(url, auth=("anyone", "wrong")).status_code == 401
        assert httpx.get(url, auth=("anyone", "correct horse battery")).status_code == 200
        assert httpx.get(url, headers={"Authorization": "Bearer correct horse battery"}).status_code == 200
        assert httpx.get(url, headers={"Authorization": "Basic " + base64.b64encode(b"x").decode()}).status_code == 401
        assert httpx.get(url + "healthz").status_code == 200  # for health checks, says nothing
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        _missing("Debian's chromium and chromium-driver (scripts/test.sh installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    downloads = tmp_path_factory.mktemp("downloads")
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1280,1000",
    ):
        opts.add_argument(flag)
    opts.add_experimental_option(
        "prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False}
    )
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
    driver.downloads = downloads
    yield driver
    driver.quit()


def _grid_order(stack, **params) -> list[str]:
    """File names of the job's first page, in the order the database gives for this view."""
    from melanoma.store.browse import View, page

    engine = db.make_engine(stack["env"]["MELANOMA_DATABASE_URL"])
    with db.session_scope(engine) as s:
        rows = page(s, stack["job"], View.parse(params), None).rows
        return [r.image_path.rsplit("/", 1)[-1] for r in rows]


def test_a_reviewer_in_a_real_browser(stack, browser):
    """Open the jobs page and the job (grid order = the database's), filter to flagged images with
    the form, open the top image and wait for its heat map, step to the next image, download the
    CSV. With MELANOMA_SCREENSHOTS=DIR the pages are saved as PNGs (docs/viewer/)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    shots = os.environ.get("MELANOMA_SCREENSHOTS")
    wait = WebDriverWait(browser, 120)

    def shot(name: str) -> None:
        if shots:
            Path(shots).mkdir(parents=True, exist_ok=True)
            browser.save_screenshot(str(Path(shots) / f"{name}.png"))

    def names() -> list[str]:
        return [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#grid .name")]

    browser.get(stack["url"] + "/")
    shot("jobs")
    browser.find_element(By.LINK_TEXT, "viewer test").click()
    wait.until(ec.presence_of_element_located((By.ID, "grid")))
    assert names() == _grid_order(stack)  # P(melanoma), highest first, errors last
    assert len(names()) == stack["status"]["total"]
    thumbs = (By.CSS_SELECTOR, "#grid img")
    wait.until(lambda d: all(img.get_property("naturalWidth") > 0 for img in d.find_elements(*thumbs)))
    shot("job")
    # Filter with the form, as a person would: flagged images only.
    browser.find_element(By.NAME, "flagged").click()
    browser.find_element(By.CSS_SELECTOR, "form.filters button").click()
    wait.until(ec.url_contains("flagged=1"))
    flagged = names()
    assert flagged == _grid_order(stack, flagged="1") and flagged
    assert len(browser.find_elements(By.CSS_SELECTOR, "#grid li.card.flagged")) == len(flagged)
    browser.find_element(By.CSS_SELECTOR, "#grid li.card a").click()
    wait.until(ec.visibility_of_element_located((By.ID, "heatmap")))
    assert len(browser.find_elements(By.CSS_SELECTOR, "#probs meter")) == 9
    assert browser.execute_script("return document.getElementById('heatmap').naturalWidth") > 0
    assert "Grad-CAM" in browser.find_element(By.ID, "heatmap-status").text
    assert browser.find_element(By.CSS_SELECTOR, "h1").text == flagged[0]
    shot("image")
    if len(flagged) > 1:
        here = browser.current_url
        browser.find_element(By.ID, "next").click()
        wait.until(lambda d: d.current_url != here)
        assert "flagged=1" in browser.current_url  # next stays within the filter
        assert browser.find_element(By.CSS_SELECTOR, "h1").text == flagged[1]
    # Download the CSV from the job page.
    browser.find_element(By.LINK_TEXT, "↑ job").click()
    browser.find_element(By.LINK_TEXT, "CSV").click()
    target = browser.downloads / f"job-{stack['job']}.csv"
    wait.until(lambda d: target.is_file() and target.stat().st_size > 0)
    rows = list(csv.DictReader(io.StringIO(target.read_text())))
    assert len(rows) == stack["status"]["total"]
    logs = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not logs, logs  # no CSP violation, no script error


def test_a_running_jobs_page_follows_it_to_the_end(stack, browser):
    """A job page opened while the job runs counts up by itself and, once the job completes, shows
    what a page opened then would: the scored grid and the familiarity line. The worker is paused
    (SIGSTOP) while the page is opened, so the job is still pending then."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    folder = stack["tmp"] / "clinic" / "later"
    folder.mkdir()
    for src in sorted((TEST_IMAGES / "melanoma").glob("*.jpg"))[:2]:
        shutil.copy(src, folder / src.name)
    write_photos(folder)
    n = len(list(folder.iterdir()))
    worker = stack["worker"].proc.pid
    os.killpg(worker, signal.SIGSTOP)
    try:
        job = submit(stack["env"], folder, "--name", "running")
        browser.get(f"{stack['url']}/jobs/{job}")
        progress = browser.find_element(By.ID, "progress")
        assert progress.get_attribute("data-complete") == "false"
        assert progress.find_element(By.CSS_SELECTOR, "[data-field=pending]").text == str(n)
        assert not browser.find_elements(By.CSS_SELECTOR, "#grid li.card.ok")
        assert "unfamiliar" not in browser.find_element(By.ID, "familiarity").text
    finally:
        os.killpg(worker, signal.SIGCONT)
    WebDriverWait(browser, 120).until(
        lambda d: len(d.find_elements(By.CSS_SELECTOR, "#grid li.card.ok")) == n
    )  # without a reload by the page, the grid stays as it was when opened
    assert browser.find_element(By.CSS_SELECTOR, "#progress [data-field=pending]").text == "0"
    assert browser.find_element(By.ID, "progress").get_attribute("data-complete") == "true"
    line = browser.find_element(By.ID, "familiarity").text
    assert re.match(rf"\d+ of {n} scored images unfamiliar", line), line
    logs = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not logs, logs

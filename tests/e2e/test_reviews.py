"""Confirmed diagnoses against the real stack: a real worker scores a site's images, `melanoma serve`
runs with a password, a real headless Chromium records and corrects a diagnosis and sees the job's
figures change; forged, anonymous and token-less posts are refused and write nothing."""

from __future__ import annotations

import base64
import html
import os
import re
import shutil
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from melanoma.store import db
from melanoma.store.schema import AuditEvent, Prediction, Review
from tests.conftest import TEST_IMAGES, Worker, run_cli, service_env, submit, wait_complete
from tests.e2e.test_viewer import Server, browser  # noqa: F401 (the browser fixture)

pytestmark = pytest.mark.e2e
PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def clinic(tmp_path_factory, redis_url, shipped_model_dir):
    tmp = tmp_path_factory.mktemp("reviews")
    folder = tmp / "clinic-a"
    for cls, n in (("melanoma", 3), ("nevus", 3), ("basal cell carcinoma", 2)):
        for src in sorted((TEST_IMAGES / cls).glob("*.jpg"))[:n]:
            dest = folder / cls.replace(" ", "_") / src.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dest)
    secret = tmp / "web_password"
    secret.write_text(PASSWORD + "\n")
    env = service_env(
        tmp,
        f"sqlite:///{tmp / 'melanoma.db'}",
        redis_url,
        shipped_model_dir,
        [folder],
        MELANOMA_CACHE_DIR=str(tmp / "cache"),
        MELANOMA_SITE="clinic-a",
    )
    worker = Worker(env, tmp / "worker.log")
    servers = []
    try:
        worker.wait_ready()
        job = submit(env, folder, "--name", "biopsies")
        wait_complete(env, job)
        servers.append(Server({**env, "MELANOMA_WEB_PASSWORD_FILE": str(secret)}, tmp / "serve.log"))
        servers.append(Server(env, tmp / "serve-open.log"))  # loopback, no password: read-only
        engine = db.make_engine(env["MELANOMA_DATABASE_URL"])
        with db.session_scope(engine) as s:
            ids = list(s.scalars(select(Prediction.id).where(Prediction.job_id == job).order_by(Prediction.image_path)))
        yield {"env": env, "job": job, "url": servers[0].url, "open": servers[1].url, "engine": engine, "ids": ids}
    finally:
        for server in servers:
            server.stop()
        worker.stop()


def _auth(name: str = "Dr Ada", password: str = PASSWORD) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{name}:{password}".encode()).decode()}


def _counts(engine) -> tuple[int, int]:
    with db.session_scope(engine) as s:
        return (
            s.scalar(select(func.count()).select_from(Review)) or 0,
            s.scalar(select(func.count()).select_from(AuditEvent)) or 0,
        )


def _shot(browser, name: str) -> None:  # noqa: F811
    shots = os.environ.get("MELANOMA_SCREENSHOTS")
    if shots:
        Path(shots).mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(Path(shots) / f"{name}.png"))


def _token(clinic, pid: int, name: str = "Dr Ada") -> str:
    page = httpx.get(f"{clinic['url']}/images/{pid}", headers=_auth(name)).text
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, page
    return html.unescape(found.group(1))


def test_posts_without_the_password_the_token_or_from_another_site_are_refused(clinic):
    pid = clinic["ids"][0]
    url = f"{clinic['url']}/images/{pid}/review"
    form = {"diagnosis": "melanoma", "basis": "histopathology", "note": ""}
    before = _counts(clinic["engine"])
    token = _token(clinic, pid)
    refused = [
        httpx.post(url, data={**form, "csrf_token": token}),  # no password
        httpx.post(url, data={**form, "csrf_token": token}, headers=_auth(password="wrong password")),
        httpx.post(url, data=form, headers=_auth()),  # no token
        httpx.post(url, data={**form, "csrf_token": token[:-1] + "01"[token[-1] == "0"]}, headers=_auth()),  # forged
        httpx.post(url, data={**form, "csrf_token": _token(clinic, pid, "Dr Bob")}, headers=_auth()),  # Bob's
        httpx.post(  # a page on another site posting with the browser's cached credentials
            url, data={**form, "csrf_token": token}, headers={**_auth(), "Origin": "http://evil.example"}
        ),
        httpx.post(url, data={**form, "csrf_token": token}, headers={"Authorization": f"Bearer {PASSWORD}"}),
        httpx.post(url, data={**form, "csrf_token": token}, headers=_auth(name="")),  # no reviewer name
        httpx.post(f"{clinic['open']}/images/{pid}/review", data={**form, "csrf_token": token}),  # no password set
    ]
    assert [r.status_code for r in refused] == [401, 401, 403, 403, 403, 403, 403, 403, 403], [r.text for r in refused]
    assert "token" in refused[2].text and "another site" in refused[5].text and "password" in refused[8].text
    assert _counts(clinic["engine"]) == before  # nothing written, not even an audit event
    assert "MELANOMA_WEB_PASSWORD_FILE" in httpx.get(f"{clinic['open']}/images/{pid}").text  # why no form
    bad = httpx.post(url, data={**form, "diagnosis": "angioma", "csrf_token": token}, headers=_auth())
    assert bad.status_code == 400 and "unknown diagnosis" in bad.text
    metrics = httpx.get(f"{clinic['url']}/metrics", headers=_auth()).text
    assert 'melanoma_web_refused_writes_total{reason="csrf"} 3.0' in metrics


def test_a_reviewer_records_and_corrects_a_diagnosis_in_a_real_browser(clinic, browser):  # noqa: F811
    """With MELANOMA_SCREENSHOTS=DIR the reviewed image page and the job's figures are saved as PNGs
    (docs/viewer/review.png, docs/viewer/job-reviews.png)."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    # The form posts and the page reloads: an element found just before may be gone.
    wait = WebDriverWait(browser, 60, ignored_exceptions=[StaleElementReferenceException, NoSuchElementException])
    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": _auth("Dr Ada")})
    job_url = f"{clinic['url']}/jobs/{clinic['job']}"
    browser.get(job_url)
    assert "no image of this job has a confirmed diagnosis yet" in browser.find_element(By.ID, "clinic-figures").text
    assert "site clinic-a" in browser.find_element(By.ID, "site").text
    browser.find_element(By.CSS_SELECTOR, "#grid li.card a").click()
    wait.until(lambda d: d.find_elements(By.ID, "record-review"))
    pid = int(browser.current_url.split("/images/")[1].split("?")[0].split("#")[0])
    assert browser.find_element(By.ID, "record-review").text == "record as Dr Ada"
    Select(browser.find_element(By.NAME, "diagnosis")).select_by_visible_text("melanoma")
    Select(browser.find_element(By.NAME, "basis")).select_by_visible_text("histopathology")
    browser.find_element(By.NAME, "note").send_keys("Breslow 0.4 mm")
    browser.find_element(By.ID, "record-review").click()
    wait.until(lambda d: "melanoma (histopathology) · Dr Ada" in d.find_element(By.ID, "current-review").text)
    browser.get(job_url)
    first = browser.find_element(By.ID, "clinic-figures").text
    assert "confirmed cases: 1 (1 melanomas, 0 other)" in first
    # Correct it: the job's figures follow, both entries stay.
    browser.get(f"{clinic['url']}/images/{pid}")
    Select(browser.find_element(By.NAME, "diagnosis")).select_by_visible_text("nevus")
    Select(browser.find_element(By.NAME, "basis")).select_by_visible_text("follow-up")
    browser.find_element(By.ID, "record-review").click()
    wait.until(lambda d: "nevus (follow-up) · Dr Ada" in d.find_element(By.ID, "current-review").text)
    _shot(browser, "review")
    history = browser.find_element(By.ID, "review-history").text
    assert "melanoma" in history and "nevus" in history
    assert len(browser.find_elements(By.CSS_SELECTOR, "#review-history tr.superseded")) == 1
    browser.get(job_url)
    second = browser.find_element(By.ID, "clinic-figures").text
    _shot(browser, "job-reviews")
    assert second != first and "confirmed cases: 1 (0 melanomas, 0 other)" in second
    # The filter: the reviewed image alone, and the others.
    Select(browser.find_element(By.NAME, "reviewed")).select_by_value("yes")
    browser.find_element(By.CSS_SELECTOR, "form.filters button").click()
    wait.until(lambda d: "reviewed=yes" in d.current_url)
    cards = browser.find_elements(By.CSS_SELECTOR, "#grid li.card")
    assert len(cards) == 1 and "confirmed nevus" in cards[0].text
    browser.get(job_url + "?reviewed=no")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#grid li.card")) == len(clinic["ids"]) - 1
    logs = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not logs, logs
    with db.session_scope(clinic["engine"]) as s:
        entries = [(r.diagnosis, r.reviewer, r.via) for r in s.scalars(select(Review).order_by(Review.id))]
        audit = [(e.actor, e.action, e.remote) for e in s.scalars(select(AuditEvent).order_by(AuditEvent.id))]
    assert entries[-2:] == [("melanoma", "Dr Ada", "viewer"), ("nevus", "Dr Ada", "viewer")]
    assert audit[-2:] == [("Dr Ada", "review.record", "127.0.0.1"), ("Dr Ada", "review.correct", "127.0.0.1")]
    browser.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {}})


def test_imported_diagnoses_are_measured_by_evaluate_and_shown_by_the_viewer(clinic, tmp_path):
    """The pathology export of the site's images (their folders are the diagnoses) through the CLI,
    then `evaluate --reviews` on the job and the same counts on the job page."""
    engine = clinic["engine"]
    with db.session_scope(engine) as s:
        paths = list(s.scalars(select(Prediction.image_path).where(Prediction.job_id == clinic["job"])))
    export = tmp_path / "pathology.csv"
    export.write_text(
        "image_path,diagnosis,basis\n" + "".join(f"{p},{p.split('/')[-2]},histopathology\n" for p in sorted(paths))
    )
    r = run_cli(["review", "import", str(export), "--reviewer", "lab"], clinic["env"])
    assert r.returncode == 0, r.stderr
    r = run_cli(["evaluate", "--reviews", "--job", clinic["job"]], clinic["env"], timeout=300)
    assert r.returncode == 0, r.stderr
    assert "confirmed cases: 8 (3 melanomas, 0 other)" in r.stdout
    assert "melanoma AUC:" in r.stdout and "note: from 8 cases" in r.stdout
    page = httpx.get(f"{clinic['url']}/jobs/{clinic['job']}", headers=_auth()).text
    assert "confirmed cases: 8 (3 melanomas, 0 other)" in html.unescape(page)

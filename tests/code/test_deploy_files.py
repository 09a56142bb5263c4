"""Static checks of Dockerfile and docker-compose.yml (no Docker engine runs here)."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
import yaml

from tests.conftest import REPO

BIN = Path(sys.executable).parent


def _tool(name):
    path = shutil.which(name, path=str(BIN)) or shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed (pip install -e '.[test]')")
    return path


def test_compose_file_matches_the_compose_specification():
    r = subprocess.run(
        [_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(REPO / "docker-compose.yml")],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_dockerfile_is_hadolint_clean():
    r = subprocess.run(
        [_tool("hadolint"), "--failure-threshold", "info", str(REPO / "Dockerfile")], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_compose_services(compose):
    from melanoma.cli import cli

    services = compose["services"]
    assert {"redis", "postgres", "worker", "worker-gpu", "trainer", "producer", "flower"} <= set(services)
    # every command is a real subcommand of the image's entry point
    ctx = click.Context(cli)
    for name in ("worker", "worker-gpu", "trainer", "producer"):
        assert services[name]["command"][0] in cli.list_commands(ctx), name
    assert services["trainer"]["command"][:2] == ["trainer", "serve"]
    trainer = cli.get_command(ctx, "trainer")
    assert isinstance(trainer, click.Group) and "serve" in trainer.commands
    # Redis keeps its queue across restarts and needs a password
    redis_cmd = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in redis_cmd and "--requirepass" in redis_cmd
    assert services["worker"]["environment"]["MELANOMA_DATABASE_URL"].startswith("postgresql+psycopg://")
    # the GPU worker reserves one device per replica
    dev = services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert dev["count"] == 1 and dev["capabilities"] == ["gpu"]
    # scaled by replicas, and healthchecked
    assert "replicas" in services["worker"]["deploy"]
    for name in ("redis", "postgres", "worker", "worker-gpu"):
        assert "healthcheck" in services[name], name
    # images are read-only inside the containers
    assert any(v.endswith(":/data:ro") for v in services["worker"]["volumes"])


def test_nothing_listens_on_a_public_interface(compose):
    for name, svc in compose["services"].items():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on all interfaces"


def test_credentials_come_from_secret_files(compose):
    services = compose["services"]
    for name in ("worker", "producer", "trainer", "redis", "postgres", "flower", "web"):
        env = services[name].get("environment", {})
        text = " ".join(str(v) for v in env.values()) + " ".join(map(str, services[name].get("command", [])))
        assert not re.search(r"://[^/@\s]*:[^/@\s$]+@", text), f"{name} has a password in its URL"
        assert not any(k.endswith("PASSWORD") for k in env), f"{name} takes a password from the environment"
        assert services[name].get("secrets"), name
    assert services["worker"]["environment"]["MELANOMA_DATABASE_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    assert set(compose["secrets"]) == {"redis_password", "postgres_password", "flower_password", "web_password"}
    assert services["web"]["environment"]["MELANOMA_WEB_PASSWORD_FILE"] == "/run/secrets/web_password"
    assert "secrets" in (REPO / ".dockerignore").read_text().split()


def test_app_containers_are_locked_down(compose):
    for name in ("worker", "worker-gpu", "producer", "trainer", "web"):
        svc = compose["services"][name]
        assert svc["read_only"] is True and svc["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in svc["security_opt"], name


def test_compose_settings_exist(compose):
    from melanoma.core.settings import Settings, env_name

    known = {env_name(f) for f in Settings.model_fields}
    for name in ("worker", "producer"):
        for key in compose["services"][name]["environment"]:
            assert key in known, key


def test_dockerfile_runs_as_non_root_and_copies_what_exists():
    text = (REPO / "Dockerfile").read_text()
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    defaults = dict(re.findall(r"^ARG\s+(\w+)=(\S*)", text, re.M))
    assert users and not users[-1].startswith(("0", "root"))
    for line in re.findall(r"^COPY\s+(.*)$", text, re.M):
        if "--from=" in line:
            continue
        sources = [w for w in line.split() if not w.startswith("--")][:-1]
        for src in sources:
            # Build arguments in a source take their default (e.g. WHEELHOUSE=wheelhouse).
            src = re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], src)
            assert (REPO / src).exists(), src
    assert "ARG VARIANT=cpu" in text and '".[${VARIANT},pretrained]"' in text


def test_every_image_variant_is_an_extra(compose):
    import tomllib

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    variants = {svc["build"]["args"]["VARIANT"] for svc in compose["services"].values() if "build" in svc}
    assert variants == {"cpu", "cuda"}
    assert variants <= extras.keys()
    gpu = compose["services"]["worker-gpu"]["build"]["args"]["BASE_IMAGE"]
    assert "nvidia/cuda:12.5" in gpu and "cudnn" in gpu  # what TensorFlow 2.21 is built against


def test_env_example_lists_every_compose_variable():
    used = set(re.findall(r"\$\{(\w+)(?::-[^}]*)?\}", (REPO / "docker-compose.yml").read_text()))
    lines = (REPO / ".env.example").read_text().splitlines()
    listed = {ln.split("=", 1)[0] for ln in lines if ln and not ln.startswith("#")}
    assert used == listed


def test_prometheus_scrapes_the_port_the_workers_serve(compose):
    config = yaml.safe_load((REPO / "deploy" / "prometheus.yml").read_text())
    port = int(compose["services"]["worker"]["environment"]["MELANOMA_METRICS_PORT"])
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    sd = jobs["melanoma-workers"]["dns_sd_configs"][0]
    assert sd["port"] == port and "worker" in sd["names"]
    # The viewer's own /metrics, behind its password (published on loopback only).
    web = jobs["melanoma-web"]
    assert web["static_configs"][0]["targets"] == ["web:8000"]
    assert web["basic_auth"]["password_file"] == "/run/secrets/web_password"
    assert "web_password" in compose["services"]["prometheus"]["secrets"]
    assert compose["services"]["web"]["ports"] == ["127.0.0.1:${MELANOMA_WEB_PORT:-8000}:8000"]
    prom = compose["services"]["prometheus"]
    assert "./deploy/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in prom["volumes"]
    assert prom["profiles"] == ["monitoring"]

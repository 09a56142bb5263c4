"""Kubernetes manifests: valid against the Kubernetes schemas, and consistent with each other."""

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import REPO

K8S = REPO / "deploy" / "k8s"
CORE = [
    "namespace.yaml",
    "config.yaml",
    "secrets.example.yaml",
    "storage.yaml",
    "redis.yaml",
    "postgres.yaml",
    "worker.yaml",
    "worker-gpu.yaml",
    "trainer.yaml",
    "producer-job.yaml",
    "web.yaml",
]


def docs(name):
    return [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]


def by_kind(kind):
    return {d["metadata"]["name"]: d for f in K8S.glob("*.yaml") for d in docs(f.name) if d.get("kind") == kind}


def test_manifests_pass_kubernetes_validate_strict():
    tool = shutil.which("kubernetes-validate", path=str(Path(sys.executable).parent))
    assert tool, "kubernetes-validate is not installed (pip install -e '.[test]')"
    r = subprocess.run([tool, "--strict", "--quiet", *[str(K8S / f) for f in CORE]], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_kustomization_lists_real_files():
    k = docs("kustomization.yaml")[0]
    for f in k["resources"]:
        assert (K8S / f).is_file(), f
    assert "secrets.example.yaml" not in k["resources"]  # real credentials are applied by hand


def test_keda_scales_the_worker_on_its_queue():
    from melanoma.core.settings import Settings

    so = by_kind("ScaledObject")["worker"]
    assert so["spec"]["scaleTargetRef"]["name"] in by_kind("Deployment")
    trig = so["spec"]["triggers"][0]
    assert trig["type"] == "redis" and trig["metadata"]["listName"] == Settings.model_fields["queue"].default
    auth = by_kind("TriggerAuthentication")[trig["authenticationRef"]["name"]]
    ref = auth["spec"]["secretTargetRef"][0]
    secret = by_kind("Secret")[ref["name"]]
    assert ref["key"] in secret["stringData"]
    assert so["spec"]["minReplicaCount"] >= 1


def test_workers_and_gpu_variant():
    deps = by_kind("Deployment")
    gpu = deps["worker-gpu"]["spec"]["template"]["spec"]
    assert gpu["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert gpu["nodeSelector"] and gpu["tolerations"]
    for name in ("worker", "worker-gpu", "trainer"):
        pod = deps[name]["spec"]["template"]["spec"]
        c = pod["containers"][0]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert {"name": "images", "mountPath": "/data", "readOnly": True} in c["volumeMounts"]
    assert deps["trainer"]["spec"]["template"]["spec"]["containers"][0]["args"][:2] == ["trainer", "serve"]


def test_credentials_are_files_from_the_secret():
    from melanoma.core.settings import Settings

    cfg = by_kind("ConfigMap")["melanoma-config"]["data"]
    assert "://" in cfg["MELANOMA_BROKER_URL"] and "@" not in cfg["MELANOMA_BROKER_URL"]
    s = Settings.from_env({k: v for k, v in cfg.items() if not k.endswith("_FILE")})
    assert s.broker_url == cfg["MELANOMA_BROKER_URL"]
    for key in ("MELANOMA_BROKER_PASSWORD_FILE", "MELANOMA_DATABASE_PASSWORD_FILE"):
        assert cfg[key].startswith("/run/secrets/melanoma/")
    assert "data" not in by_kind("Secret")["melanoma-credentials"]  # the example holds placeholders only


def test_viewer_requires_its_password_and_is_not_exposed():
    web = by_kind("Deployment")["web"]["spec"]["template"]["spec"]
    (c,) = web["containers"]
    assert c["args"][:3] == ["serve", "--host", "0.0.0.0"]  # not loopback: must have the password
    env = {e["name"]: e["value"] for e in c["env"]}
    secret_file = env["MELANOMA_WEB_PASSWORD_FILE"]
    mount = next(m for m in c["volumeMounts"] if m["name"] == "credentials")
    key = secret_file.removeprefix(mount["mountPath"] + "/")
    assert key in by_kind("Secret")["melanoma-credentials"]["stringData"]
    assert by_kind("Service")["web"]["spec"]["type"] == "ClusterIP"
    assert c["readinessProbe"]["httpGet"]["path"] == "/healthz"

"""deploy/kubernetes/: every manifest is valid against the Kubernetes schemas (offline, kubernetes-validate),
and what they say agrees with sessionizer: the ConfigMap holds a config it accepts, the probes and the
metrics port are the ones that config serves."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from sessionizer.config import load_run_settings
from sessionizer.forward.settings import load_forward_settings

KUBERNETES = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
MANIFESTS = sorted(p for p in KUBERNETES.glob("*.yaml") if p.name != "kustomization.yaml")
# The oldest Kubernetes the managed services still run, and the newest the schemas know.
VERSIONS = ["1.30", "1.37"]


def documents() -> dict[str, dict]:
    return {doc["kind"]: doc for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text()) if doc}


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_each_manifest_is_valid_for_kubernetes(path, version):
    for doc in yaml.safe_load_all(path.read_text()):
        kubernetes_validate.validate(doc, version, strict=True)  # raises on any error


def test_the_kustomization_lists_every_manifest():
    listed = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())["resources"]
    assert sorted(listed) == [p.name for p in MANIFESTS]


@pytest.fixture()
def mounted_config(tmp_path, monkeypatch):
    """The ConfigMap's config.toml as the pods see it, with the Secret's variables set."""
    docs = documents()
    for name in docs["Secret"]["stringData"]:
        monkeypatch.setenv(name, f"test-{name.lower()}")
    path = tmp_path / "config.toml"
    path.write_text(docs["ConfigMap"]["data"]["config.toml"])
    return path


def test_the_configmap_holds_a_config_sessionizer_accepts(mounted_config):
    settings = load_run_settings(mounted_config)
    assert settings.metrics is not None and settings.metrics.host == "0.0.0.0"
    assert settings.platform.platform == "confluent-cloud"
    forward = load_forward_settings(mounted_config)
    assert forward.kind == "kafka"


def test_the_workloads_probe_the_endpoints_the_config_serves(mounted_config):
    settings = load_run_settings(mounted_config)
    docs = documents()
    for kind in ("StatefulSet", "Deployment"):
        pod = docs[kind]["spec"]["template"]["spec"]
        container = pod["containers"][0]
        assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"metrics": settings.metrics.port}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
        # Liveness gives up after longer than the loop may legitimately be stuck.
        live = container["livenessProbe"]
        assert live["periodSeconds"] * live["failureThreshold"] >= settings.metrics.stuck_after_s
        assert pod["securityContext"]["runAsUser"] == 10001 and pod["securityContext"]["runAsNonRoot"]
        # SIGTERM commits the transaction in flight: the grace period outlasts a commit and its retries.
        assert pod["terminationGracePeriodSeconds"] >= 30
        assert container["args"][-1] == "/etc/sessionizer/config.toml"
    stateful = docs["StatefulSet"]
    assert stateful["spec"]["serviceName"] == docs["Service"]["metadata"]["name"]
    assert "client_id" not in docs["ConfigMap"]["data"]["config.toml"].split("[kafka.auth]")[0].replace(
        "# client_id", "")  # the pod name (host name) is the client id, hence a stable transactional id
    assert docs["PodDisruptionBudget"]["spec"]["selector"] == stateful["spec"]["selector"]

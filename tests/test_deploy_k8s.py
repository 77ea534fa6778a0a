"""deploy/k8s: the manifests parse and agree with each other and with the engine.

No cluster here: these are the mistakes that a cluster would only show after a
rollout (a Service selecting no pod, a probe on the wrong port, a grace period
shorter than the engine's, an argument the CLI does not know).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_deploy_promql import DEPLOY, PROMETHEUS_DIR

from engine.cli import build_parser

K8S = DEPLOY / "k8s"
MANIFESTS = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def documents() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in MANIFESTS:
        docs.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return docs


def one(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in documents() if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def deployment() -> dict[str, Any]:
    return one("Deployment", "inventory-engine")


def container() -> dict[str, Any]:
    (engine,) = deployment()["spec"]["template"]["spec"]["containers"]
    return engine  # type: ignore[no-any-return]


def container_ports() -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container()["ports"]}


def config_values() -> dict[str, str]:
    return one("ConfigMap", "inventory-engine")["data"]  # type: ignore[no-any-return]


def expanded_args() -> list[str]:
    """The container's arguments with $(VAR) expanded as the kubelet does."""
    env = {e["name"]: e["value"] for e in container().get("env", []) if "value" in e}
    for source in container().get("envFrom", []):
        assert one("ConfigMap", source["configMapRef"]["name"])
        env.update(config_values())

    def expand(arg: str) -> str:
        def value(match: re.Match[str]) -> str:
            assert match.group(1) in env, f"{arg}: $({match.group(1)}) is defined nowhere"
            return env[match.group(1)]

        return re.sub(r"\$\((\w+)\)", value, arg)

    return [expand(arg) for arg in container()["args"]]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def test_every_manifest_parses_into_one_namespace() -> None:
    docs = documents()
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "ConfigMap"} <= kinds
    namespaces = {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"}
    assert namespaces == {one("Namespace")["metadata"]["name"]}
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == [p.name for p in MANIFESTS]


def test_the_arguments_parse_with_the_real_cli() -> None:
    args = build_parser().parse_args(expanded_args())
    assert args.command == "serve"
    assert args.log_format == "json"
    assert args.listen == f"0.0.0.0:{container_ports()['grpc']}", "pods must listen on their IP"
    assert args.metrics_port == container_ports()["metrics"]
    assert args.redis_cluster, "replicas share the truth only through Redis"
    assert args.workers >= 1


def test_probes_use_grpc_health_on_the_grpc_port() -> None:
    engine = container()
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert engine[probe]["grpc"]["port"] == container_ports()["grpc"], probe
        assert "service" not in engine[probe]["grpc"] or engine[probe]["grpc"]["service"] == ""


def test_resources_are_set() -> None:
    resources = container()["resources"]
    assert {"cpu", "memory"} <= resources["requests"].keys(), "the HPA and the scheduler go by requests"
    assert "memory" in resources["limits"]


def test_termination_grace_covers_the_pre_stop_pause_and_the_engines_grace() -> None:
    spec = deployment()["spec"]["template"]["spec"]
    grace = build_parser().parse_args(expanded_args()).grace
    pause = 0.0
    pre_stop = container().get("lifecycle", {}).get("preStop", {})
    if "exec" in pre_stop:
        command = pre_stop["exec"]["command"]
        assert command[0] == "sleep"
        pause = float(command[1])
    # The --workers supervisor waits grace + 10 s for its workers before killing them.
    assert spec["terminationGracePeriodSeconds"] >= pause + grace + 10


def test_metrics_port_is_annotated_and_writable_tmp_exists() -> None:
    annotations = deployment()["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == container_ports()["metrics"]
    assert annotations["prometheus.io/path"] == "/metrics"
    # Multiprocess metrics files need a writable TMPDIR on a read-only root.
    if container()["securityContext"].get("readOnlyRootFilesystem"):
        tmpdir = next(e["value"] for e in container()["env"] if e["name"] == "TMPDIR")
        assert tmpdir in {m["mountPath"] for m in container()["volumeMounts"]}


def test_services_select_the_pods_and_target_named_ports() -> None:
    pod_labels = deployment()["spec"]["template"]["metadata"]["labels"]
    assert selects(deployment()["spec"]["selector"]["matchLabels"], pod_labels)
    services = [d for d in documents() if d["kind"] == "Service"]
    assert services
    for service in services:
        assert selects(service["spec"]["selector"], pod_labels), service["metadata"]["name"]
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in container_ports(), (
                f"{service['metadata']['name']}: {port['targetPort']}"
            )
    grpc_ports = [p for s in services for p in s["spec"]["ports"] if p["name"] == "grpc"]
    assert all(p.get("appProtocol") == "kubernetes.io/h2c" for p in grpc_ports)


def test_pdb_and_hpa_target_the_deployment() -> None:
    pod_labels = deployment()["spec"]["template"]["metadata"]["labels"]
    pdb = one("PodDisruptionBudget")
    assert selects(pdb["spec"]["selector"]["matchLabels"], pod_labels)
    hpa = one("HorizontalPodAutoscaler")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        "apps/v1",
        "Deployment",
        "inventory-engine",
    )
    assert hpa["spec"]["minReplicas"] >= 2
    # A drain must always leave pods serving.
    assert pdb["spec"].get("maxUnavailable", 0) < hpa["spec"]["minReplicas"]
    assert deployment()["spec"]["replicas"] >= hpa["spec"]["minReplicas"]


def test_the_kubernetes_scrape_config_finds_these_pods() -> None:
    config = yaml.safe_load((PROMETHEUS_DIR / "kubernetes.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "inventory-engine", "the rules and dashboards select this job"
    (sd,) = job["kubernetes_sd_configs"]
    assert one("Namespace")["metadata"]["name"] in sd["namespaces"]["names"]
    pod_labels = deployment()["spec"]["template"]["metadata"]["labels"]
    keeps = {
        tuple(r["source_labels"]): r["regex"] for r in job["relabel_configs"] if r.get("action") == "keep"
    }
    assert re.fullmatch(
        keeps[("__meta_kubernetes_pod_label_app_kubernetes_io_name",)], pod_labels["app.kubernetes.io/name"]
    )
    assert re.fullmatch(keeps[("__meta_kubernetes_pod_container_port_name",)], "metrics")
    assert "metrics" in container_ports()


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: Path(p).name)
def test_manifests_have_kubernetes_shape(path: Path) -> None:
    for doc in yaml.safe_load_all(path.read_text()):
        if doc is None:
            continue
        assert {"apiVersion", "kind", "metadata"} <= doc.keys()
        assert doc["metadata"]["name"]
        assert doc["metadata"].get("labels", {}).get("app.kubernetes.io/part-of") == "inventory"

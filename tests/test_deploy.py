"""The deployment files for stages on their own containers (deploy/): checked offline, field by field.

No cluster and no network: the Kubernetes objects are checked for the fields the API server requires of their
kinds and for what ties them together (selectors, ports, probes, autoscaler targets, the entry's addresses of the
model services), and the compose file for its services, commands, health checks and addresses. That the three
servers really work together this way is tests/test_remote_topology.py, on loopback.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml

from recsys.settings import ServingSettings

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
COMPOSE = ROOT / "deploy" / "compose.yaml"
STAGES = {"candidates": "Candidates", "ranker": "Ranker"}
# what each kind must have (a path of keys), beyond apiVersion, kind and metadata.name
REQUIRED = {
    ("apps/v1", "Deployment"): [("spec", "selector", "matchLabels"), ("spec", "template", "metadata", "labels"),
                                ("spec", "template", "spec", "containers")],
    ("v1", "Service"): [("spec", "selector"), ("spec", "ports")],
    ("autoscaling/v2", "HorizontalPodAutoscaler"): [("spec", "scaleTargetRef", "name"), ("spec", "maxReplicas"),
                                                    ("spec", "metrics")],
}


def _get(doc: dict, path: tuple[str, ...]) -> object:
    for key in path:
        if not isinstance(doc, dict) or key not in doc:
            raise KeyError(".".join(path))
        doc = doc[key]
    return doc


def _objects() -> list[dict]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    docs = [doc for name in kustomization["resources"] for doc in yaml.safe_load_all((K8S / name).read_text())]
    assert sorted(kustomization["resources"]) == sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
    return docs


def _service_classes() -> set[str]:
    """The BentoML services service.py defines (read, not imported: importing it needs a trained store)."""
    tree = ast.parse((ROOT / "service.py").read_text())
    return {node.name for node in tree.body if isinstance(node, ast.ClassDef)
            and any("bentoml.service" in ast.unparse(d) for d in node.decorator_list)}


def check_kubernetes(docs: list[dict]) -> None:
    by_kind: dict[str, dict[str, dict]] = {}
    for doc in docs:
        key = (doc.get("apiVersion"), doc.get("kind"))
        assert key in REQUIRED, f"unexpected object {key}"
        name = _get(doc, ("metadata", "name"))
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= 63, name  # a DNS label
        for path in REQUIRED[key]:
            _get(doc, path)
        assert name not in by_kind.setdefault(doc["kind"], {}), f"two {doc['kind']}s named {name}"
        by_kind[doc["kind"]][name] = doc
    deployments, services, autoscalers = (by_kind.get(k, {}) for k in ("Deployment", "Service",
                                                                       "HorizontalPodAutoscaler"))
    assert set(deployments) == set(services) == set(autoscalers) == {f"recsys-{c}" for c in
                                                                      ("recommender", *STAGES)}
    classes = _service_classes()
    for name, deployment in deployments.items():
        spec = deployment["spec"]
        labels = spec["template"]["metadata"]["labels"]
        assert spec["selector"]["matchLabels"].items() <= labels.items(), f"{name}: selector does not match its pods"
        [container] = spec["template"]["spec"]["containers"]
        assert container["image"] and container["name"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/livez")):
            assert container[probe]["httpGet"]["path"] == path and container[probe]["httpGet"]["port"] in ports, name
        assert "cpu" in container["resources"]["requests"], f"{name}: an autoscaler on CPU needs a CPU request"
        command = " ".join(container.get("args", []))
        stage = next((s for s in STAGES if name.endswith(s)), None)
        if stage:  # one model service of the Bento, served on its own
            assert f"bentoml serve service:{STAGES[stage]} " in command and STAGES[stage] in classes, name
        else:  # the entry: the Bento's own service, told where the stages are
            env = {e["name"]: e["value"] for e in container["env"]}
            settings = ServingSettings(topology=env["RECSYS_SERVING__TOPOLOGY"],
                                       candidates_url=env["RECSYS_SERVING__CANDIDATES_URL"],
                                       ranker_url=env["RECSYS_SERVING__RANKER_URL"])
            for stage_name in STAGES:
                host, port = re.fullmatch(r"http://([a-z0-9-]+):(\d+)", getattr(settings, f"{stage_name}_url")).groups()
                service = services[host]  # the address is the stage's Service, on a port it exposes
                assert service["spec"]["selector"] == deployments[f"recsys-{stage_name}"]["spec"]["selector"][
                    "matchLabels"]
                assert int(port) in {p["port"] for p in service["spec"]["ports"]}
        service = services[name]
        assert service["spec"]["selector"].items() <= labels.items(), f"service {name} selects no pod of its deployment"
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports or port["targetPort"] in ports.values(), name
        autoscaler = autoscalers[name]["spec"]
        assert autoscaler["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name}
        assert 1 <= autoscaler.get("minReplicas", 1) <= autoscaler["maxReplicas"]
        assert spec["replicas"] >= autoscaler.get("minReplicas", 1)


def check_compose(compose: dict) -> None:
    services = compose["services"]
    assert set(services) == {"recommender", *STAGES}
    for name, service in services.items():
        assert service["image"].startswith("${RECSYS_IMAGE")
        assert "/readyz" in " ".join(service["healthcheck"]["test"])
        if name in STAGES:
            assert f"bentoml serve service:{STAGES[name]} " in " ".join(service["command"])
            assert "ports" not in service  # the model services answer only the entry, on the compose network
    entry = services["recommender"]
    settings = ServingSettings(topology=entry["environment"]["RECSYS_SERVING__TOPOLOGY"],
                               candidates_url=entry["environment"]["RECSYS_SERVING__CANDIDATES_URL"],
                               ranker_url=entry["environment"]["RECSYS_SERVING__RANKER_URL"])
    assert settings.candidates_url == "http://candidates:3000" and settings.ranker_url == "http://ranker:3000"
    assert {stage: c["condition"] for stage, c in entry["depends_on"].items()} == dict.fromkeys(STAGES, "service_healthy")
    assert all(p.startswith("127.0.0.1:") for p in entry["ports"])  # loopback, as `make serve`


def test_kubernetes_manifests():
    check_kubernetes(_objects())


def test_compose_file():
    check_compose(yaml.safe_load(COMPOSE.read_text()))


@pytest.mark.parametrize("damage", ["selector", "hpa-target", "readiness", "entry-address", "stage-command"])
def test_the_checks_catch_a_broken_manifest(damage):
    docs = _objects()
    deployment = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "recsys-ranker")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    if damage == "selector":
        deployment["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] = "rankr"
    elif damage == "hpa-target":
        next(d for d in docs if d["kind"] == "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]["name"] = "recsys-x"
    elif damage == "readiness":
        del container["readinessProbe"]
    elif damage == "entry-address":
        entry = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "recsys-recommender")
        env = entry["spec"]["template"]["spec"]["containers"][0]["env"]
        next(e for e in env if e["name"] == "RECSYS_SERVING__RANKER_URL")["value"] = "http://recsys-rankers:3000"
    else:
        container["args"][-1] = container["args"][-1].replace("service:Ranker", "service:Rankr")
    with pytest.raises((AssertionError, KeyError)):
        check_kubernetes(docs)

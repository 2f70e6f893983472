"""The Helm chart: lints, renders valid objects, and wires what the code expects.

Names are compared with the code's own (``schemas.topics.Topics``, the registry, the kinds),
never with strings written here, so a renamed topic or group fails these tests.
"""

from __future__ import annotations

import json
import tomllib
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import yaml

from schemas.kinds import backend_kinds, key_variables
from schemas.registry import load_registry
from schemas.settings import load_settings
from schemas.topics import Topics
from tests.unit.helm_chart import (
    CHART,
    KUBE_VERSIONS,
    ROOT,
    VALUES,
    Manifest,
    containers,
    env_of,
    lint,
    named,
    of_kind,
    refusal,
    render,
    validate,
)

FULL = VALUES["full-values"]
# Variables whose values are secrets: only ever read from a Secret.
SECRET_VARIABLES = {"KC_API_KEYS", "KC_ADMIN_KEYS", "KC_KAFKA_SASL_PASSWORD", *key_variables()}
SECRET_VARIABLES |= {f"KC_{name}" for name in key_variables()}


def _values(path: Path | None) -> dict[str, Any]:
    defaults: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    given = yaml.safe_load(path.read_text()) if path else {}
    return {
        **defaults,
        **{
            k: v if not isinstance(v, dict) else {**defaults.get(k, {}), **v}
            for k, v in given.items()
        },
    }


def _extra(tmp_path: Path, values: dict[str, Any]) -> Path:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


@pytest.mark.parametrize("values", VALUES.values(), ids=VALUES.keys())
def test_helm_lint_strict_passes(values: Path | None) -> None:
    done = lint(values)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 chart(s) failed" in done.stdout


@pytest.mark.parametrize("values", VALUES.values(), ids=VALUES.keys())
def test_every_rendered_object_matches_its_schema(values: Path | None) -> None:
    objects = render(values)
    assert objects
    for obj in objects:
        for kube in KUBE_VERSIONS:
            validate(obj, kube)


def test_the_schemas_refuse_a_misspelt_field() -> None:
    # Strict: a field Kubernetes (or KEDA) would silently drop fails the validation.
    deployment = of_kind(render(None), "Deployment")[0]
    broken = {**deployment, "spec": {**deployment["spec"], "replica": 2}}
    with pytest.raises(Exception, match="replica"):
        validate(broken, KUBE_VERSIONS[0])
    scaled = of_kind(render(None), "ScaledObject")[0]
    broken = {**scaled, "spec": {**scaled["spec"], "minReplicas": 0}}
    with pytest.raises(Exception, match="minReplicas"):
        validate(broken, KUBE_VERSIONS[0])


@pytest.mark.parametrize("values", VALUES.values(), ids=VALUES.keys())
def test_one_worker_deployment_per_model_serving_it(values: Path | None) -> None:
    objects = render(values)
    workers = _values(values)["workers"]
    deployments = of_kind(objects, "Deployment")
    assert len(deployments) == len(workers)
    served = {}
    for deployment, container in containers(deployments):
        args = container["args"]
        assert args[:2] == ["worker", "--model"] and len(args) == 3
        assert deployment["metadata"]["labels"]["kafka-completions/model"] == args[2]
        served[args[2]] = deployment
    assert set(served) == {w["model"] for w in workers}


@pytest.mark.parametrize("values", [None, FULL], ids=["defaults", "full-values"])
def test_a_scaled_object_per_worker_on_its_group_and_both_lanes(values: Path | None) -> None:
    objects = render(values)
    settings = _values(values)
    kafka = settings["kafka"]
    topics = Topics(kafka.get("topicPrefix", ""))
    scaled = {s["spec"]["scaleTargetRef"]["name"]: s for s in of_kind(objects, "ScaledObject")}
    deployments = of_kind(objects, "Deployment")
    assert set(scaled) == {d["metadata"]["name"] for d in deployments}
    for deployment, container in containers(deployments):
        model = container["args"][2]
        spec = scaled[deployment["metadata"]["name"]]["spec"]
        triggers = [t["metadata"] for t in spec["triggers"]]
        assert {t["topic"] for t in triggers} == {topics.requests(model), topics.bulk(model)}
        assert {t["consumerGroup"] for t in triggers} == {topics.worker_group(model)}
        assert {t["bootstrapServers"] for t in triggers} == {kafka["bootstrap"]}
        assert {t["allowIdleConsumers"] for t in triggers} == {"false"}
        assert 1 <= spec["maxReplicaCount"] <= kafka["requestPartitions"]
        assert "replicas" not in deployment["spec"], "KEDA owns the replica count"


def test_a_worker_past_the_partition_count_is_refused(tmp_path: Path) -> None:
    extra = _extra(tmp_path, {"workers": [{"model": "echo", "maxReplicas": 9}]})
    assert "at most kafka.requestPartitions (8)" in refusal(None, extra)


def test_only_a_bulk_only_model_scales_to_zero(tmp_path: Path) -> None:
    extra = _extra(tmp_path, {"workers": [{"model": "echo", "minReplicas": 0}]})
    assert "only a bulkOnly model may scale to zero" in refusal(None, extra)
    objects = render(FULL)
    bulk_only = [w["model"] for w in _values(FULL)["workers"] if w.get("bulkOnly")]
    assert bulk_only
    for scaled in of_kind(objects, "ScaledObject"):
        model = scaled["metadata"]["labels"]["kafka-completions/model"]
        assert (scaled["spec"]["minReplicaCount"] == 0) == (model in bulk_only)


def test_without_autoscaling_workers_have_fixed_replicas() -> None:
    values = VALUES["fixed-values"]
    objects = render(values)
    assert of_kind(objects, "ScaledObject") == []
    replicas = {
        c["args"][2]: d["spec"]["replicas"] for d, c in containers(of_kind(objects, "Deployment"))
    }
    assert replicas == {w["model"]: w["replicas"] for w in _values(values)["workers"]}


@pytest.mark.parametrize("values", VALUES.values(), ids=VALUES.keys())
def test_the_reply_partition_is_the_front_ends_ordinal(values: Path | None) -> None:
    objects = render(values)
    (statefulset,) = of_kind(objects, "StatefulSet")
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    reply = env_of(container)["KC_REPLY_PARTITION"]
    field = reply["valueFrom"]["fieldRef"]["fieldPath"]
    assert field == "metadata.labels['apps.kubernetes.io/pod-index']"
    kafka = _values(values)["kafka"]
    assert statefulset["spec"]["replicas"] <= kafka["resultsPartitions"]
    results = int(env_of(container)["KC_RESULTS_PARTITIONS"]["value"])
    assert results == kafka["resultsPartitions"]
    # The label's value (the ordinal as a decimal) is what the setting parses.
    ordinal = str(statefulset["spec"]["replicas"] - 1)
    assert load_settings(reply_partition=ordinal).reply_partition == int(ordinal)


def test_more_front_ends_than_results_partitions_is_refused(tmp_path: Path) -> None:
    extra = _extra(tmp_path, {"frontend": {"replicas": 9}})
    assert "at most kafka.resultsPartitions (8)" in refusal(None, extra)


@pytest.mark.parametrize("values", VALUES.values(), ids=VALUES.keys())
def test_secrets_come_only_from_secret_refs(values: Path | None) -> None:
    objects = render(values)
    assert of_kind(objects, "Secret") == [], "the chart never holds a key"
    for _, container in containers(objects):
        for name, var in env_of(container).items():
            if name in SECRET_VARIABLES:
                assert "value" not in var and "secretKeyRef" in var["valueFrom"], name


def test_vendor_workers_read_their_keys_from_the_named_secrets() -> None:
    objects = render(FULL)
    vendors = _values(FULL)["vendors"]
    kinds = backend_kinds()
    checked = 0
    for _, container in containers(of_kind(objects, "Deployment")):
        kind = kinds[load_registry().get(container["args"][2]).backend]
        env = env_of(container)
        if kind.api_key_env is None:
            assert not set(env) & SECRET_VARIABLES - {"KC_KAFKA_SASL_PASSWORD"}
            continue
        ref = env[kind.api_key_env]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == vendors[kind.name]["secretName"]
        checked += 1
    assert checked == 2
    # The front end sees each key too: without it, it answers "not configured" (503).
    (front_end,) = [c for w, c in containers(objects) if w["kind"] == "StatefulSet"]
    for name, vendor in vendors.items():
        ref = env_of(front_end)[kinds[name].api_key_env or ""]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == vendor["secretName"]


def test_admin_keys_reach_the_front_end_from_their_secret_only_when_named() -> None:
    (front_end,) = [c for w, c in containers(render(FULL)) if w["kind"] == "StatefulSet"]
    ref = env_of(front_end)["KC_ADMIN_KEYS"]["valueFrom"]["secretKeyRef"]
    admin = _values(FULL)["adminKeys"]
    assert ref == {"name": admin["secretName"], "key": admin["secretKey"]}
    (plain,) = [c for w, c in containers(render(None)) if w["kind"] == "StatefulSet"]
    assert "KC_ADMIN_KEYS" not in env_of(plain), "no admin routes unless a Secret is named"
    workers = [c for w, c in containers(render(FULL)) if w["kind"] == "Deployment"]
    assert all("KC_ADMIN_KEYS" not in env_of(c) for c in workers)


def test_a_registry_change_rolls_every_pod() -> None:
    sums = set()
    for values in (None, FULL):
        objects = render(values)
        workloads = [*of_kind(objects, "Deployment"), *of_kind(objects, "StatefulSet")]
        mine = {
            w["spec"]["template"]["metadata"]["annotations"]["checksum/registry"] for w in workloads
        }
        assert len(mine) == 1
        sums |= mine
    assert len(sums) == 2


def test_local_weights_are_mounted_in_workers_and_front_ends_alike() -> None:
    objects = render(FULL)
    registry = tomllib.loads(_values(FULL)["registry"])["models"]
    paths = {name: Path(spec["path"]) for name, spec in registry.items() if "path" in spec}
    assert paths
    for _, container in containers(objects):
        mounts = [Path(m["mountPath"]) for m in container["volumeMounts"]]
        if container["name"] == "frontend":
            needed = list(paths.values())
        else:
            needed = [paths[m] for m in container["args"][2:] if m in paths]
        for path in needed:
            assert any(path.is_relative_to(m) for m in mounts), (container["name"], path)


def test_the_schema_refuses_a_secret_in_plain_values(tmp_path: Path) -> None:
    for name in sorted(SECRET_VARIABLES - set(key_variables())):
        extra = _extra(tmp_path, {"env": {name: "sk-leaked"}})
        assert "invalid propertyName" in refusal(None, extra), name
    extra = _extra(tmp_path, {"vendors": {"openai": {"secretName": "s", "apiKey": "sk-x"}}})
    assert "additional properties 'apiKey' not allowed" in refusal(None, extra)


@pytest.mark.parametrize("values", VALUES.values(), ids=VALUES.keys())
def test_no_configmap_carries_a_key(values: Path | None) -> None:
    for config in of_kind(render(values), "ConfigMap"):
        text = json.dumps(config["data"])
        assert not any(f"{name}=" in text or f'"{name}":' in text for name in SECRET_VARIABLES)
        assert "sk-" not in text and "secretKeyRef" not in text


def test_the_registry_configmap_is_the_codes_registry(tmp_path: Path) -> None:
    config = named(render(None), "ConfigMap", "kc-kafka-completions-registry")
    path = tmp_path / "models.toml"
    path.write_text(config["data"]["models.toml"])
    assert list(load_registry(path)) == list(load_registry())


def test_a_registry_in_the_values_replaces_it_and_every_worker_is_in_it(tmp_path: Path) -> None:
    objects = render(FULL)
    text = named(objects, "ConfigMap", "kc-kafka-completions-registry")["data"]["models.toml"]
    assert tomllib.loads(text) == tomllib.loads(_values(FULL)["registry"])
    path = tmp_path / "models.toml"
    path.write_text(text)
    registry = load_registry(path)
    for workload, container in containers(objects):
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        env = env_of(container)
        assert Path(env["KC_REGISTRY_PATH"]["value"]).parent.as_posix() in mounts
        if workload["kind"] == "Deployment":
            assert container["args"][2] in registry


def test_gpu_workers_ask_for_gpus_and_run_on_cuda() -> None:
    objects = render(FULL)
    gpus = {w["model"]: w.get("gpu", 0) for w in _values(FULL)["workers"]}
    assert any(gpus.values())
    for _, container in containers(of_kind(objects, "Deployment")):
        model = container["args"][2]
        limits = container.get("resources", {}).get("limits", {})
        assert limits.get("nvidia.com/gpu", 0) == gpus[model]
        assert ("KC_DEVICE" in env_of(container)) == bool(gpus[model])


def test_a_model_outside_the_registry_is_refused(tmp_path: Path) -> None:
    extra = _extra(tmp_path, {"workers": [{"model": "no-such-model"}]})
    assert 'model "no-such-model" is not in the packaged registry' in refusal(None, extra)


def test_the_dashboard_configmap_is_for_grafanas_sidecar() -> None:
    config = named(render(None), "ConfigMap", "kc-kafka-completions-dashboard")
    assert config["metadata"]["labels"]["grafana_dashboard"] == "1"
    (text,) = config["data"].values()
    repo = ROOT / "deploy" / "grafana" / "dashboards" / "kafka-completions.json"
    assert json.loads(text) == json.loads(repo.read_text())


def test_the_service_monitor_scrapes_the_front_ends_and_every_worker() -> None:
    objects = render(FULL)
    (monitor,) = of_kind(objects, "ServiceMonitor")
    wanted = monitor["spec"]["selector"]["matchLabels"]
    ports = {e["port"] for e in monitor["spec"]["endpoints"]}
    scraped = [
        s for s in of_kind(objects, "Service") if wanted.items() <= s["metadata"]["labels"].items()
    ]
    components = {s["spec"]["selector"]["app.kubernetes.io/component"] for s in scraped}
    assert components == {"frontend", "worker"}
    for service in scraped:
        assert ports <= {p["name"] for p in service["spec"]["ports"]}
    workload_ports = {
        c["name"]: {p["name"]: p["containerPort"] for p in c["ports"]}
        for _, c in containers(objects)
    }
    assert all("metrics" in p or "http" in p for p in workload_ports.values())


def test_ingress_routes_to_the_front_end_service() -> None:
    objects = render(FULL)
    (ingress,) = of_kind(objects, "Ingress")
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    service = named(objects, "Service", backend["name"])
    assert service["spec"]["selector"]["app.kubernetes.io/component"] == "frontend"
    assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}


def test_a_disruption_budget_for_the_front_end_and_each_worker() -> None:
    objects = render(None)
    budgets = of_kind(objects, "PodDisruptionBudget")
    workloads = [*of_kind(objects, "Deployment"), *of_kind(objects, "StatefulSet")]
    assert len(budgets) == len(workloads)
    for workload in workloads:
        labels = workload["spec"]["template"]["metadata"]["labels"]
        matching = [
            b for b in budgets if b["spec"]["selector"]["matchLabels"].items() <= labels.items()
        ]
        assert len(matching) == 1, workload["metadata"]["name"]


def _manifests(objects: list[Manifest]) -> set[str]:
    return {f"{o['kind']}/{o['metadata']['name']}" for o in objects}


def test_every_values_file_renders_distinct_names() -> None:
    for values in VALUES.values():
        objects = render(values)
        assert len(_manifests(objects)) == len(objects)


def test_the_charts_app_version_is_the_packages() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == version("kafka-completions")
    assert render(None)[0]["metadata"]["labels"]["app.kubernetes.io/version"] == version(
        "kafka-completions"
    )

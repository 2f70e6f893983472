"""Render the Helm chart (deploy/helm/kafka-completions) with the real ``helm``, offline.

``helm`` is a tool the suite needs (scripts/install-tools.sh builds it): missing, the tests
fail rather than skip. Objects are validated against Kubernetes' own schemas
(kubernetes-validate ships them) or, for the two custom resources, against their CRDs'
schemas kept in ``deploy_crds/``.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

ROOT = Path(__file__).parents[2]
CHART = ROOT / "deploy" / "helm" / "kafka-completions"
CRDS = Path(__file__).parent / "deploy_crds"
RELEASE = "kc"
# The oldest Kubernetes the chart supports (the pod-index label) and the newest schemas here.
KUBE_VERSIONS = ("1.28", kubernetes_validate.latest_version())
# Every values file the chart is checked with: the defaults, and those of ci/.
VALUES = {"defaults": None, **{p.stem: p for p in sorted((CHART / "ci").glob("*.yaml"))}}

Manifest = dict[str, Any]


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    """Run helm (with an empty HOME: nothing of a user's set-up is read) and return the result."""
    binary = shutil.which("helm")
    assert binary, "helm is not on PATH: scripts/install-tools.sh installs it"
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/nonexistent"}
    return subprocess.run(
        [binary, *args], capture_output=True, text=True, check=False, env=env, timeout=120
    )


def _values_args(values: Path | None, extra: Path | None) -> list[str]:
    return [arg for path in (values, extra) if path for arg in ("-f", str(path))]


def _render(values: Path | None, extra: Path | None = None) -> tuple[int, str, str]:
    return _rendered(values, extra, extra.read_text() if extra else "")


@cache
def _rendered(values: Path | None, extra: Path | None, _text: str) -> tuple[int, str, str]:
    # Cached by the extra file's text too: a test may write several into one path.
    done = helm("template", RELEASE, str(CHART), *_values_args(values, extra))
    return done.returncode, done.stdout, done.stderr


def render(values: Path | None, extra: Path | None = None) -> list[Manifest]:
    """Every object the chart renders with these values files."""
    code, out, err = _render(values, extra)
    assert code == 0, err
    return [doc for doc in yaml.safe_load_all(out) if doc]


def refusal(values: Path | None, extra: Path) -> str:
    """The error with which ``helm template`` refuses these values (it must refuse them)."""
    code, _, err = _render(values, extra)
    assert code != 0, f"helm rendered {extra.read_text()!r}"
    return err


def lint(values: Path | None) -> subprocess.CompletedProcess[str]:
    """``helm lint --strict`` with these values."""
    return helm("lint", "--strict", str(CHART), *_values_args(values, None))


def of_kind(objects: list[Manifest], kind: str) -> list[Manifest]:
    """The objects of one kind."""
    return [o for o in objects if o["kind"] == kind]


def named(objects: list[Manifest], kind: str, name: str) -> Manifest:
    """The one object of this kind and name."""
    found = [o for o in of_kind(objects, kind) if o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} rendered"
    return found[0]


def containers(objects: list[Manifest]) -> Iterator[tuple[Manifest, Manifest]]:
    """Each workload with each of its containers."""
    for obj in objects:
        if obj["kind"] in {"Deployment", "StatefulSet"}:
            for container in obj["spec"]["template"]["spec"]["containers"]:
                yield obj, container


def env_of(container: Manifest) -> dict[str, Manifest]:
    """A container's variables by name (each name once)."""
    names = [e["name"] for e in container.get("env", [])]
    assert len(names) == len(set(names)), f"a variable is set twice: {names}"
    return {e["name"]: e for e in container.get("env", [])}


@cache
def _crd_schema(kind: str) -> dict[str, Any]:
    for path in CRDS.glob("*.yaml"):
        crd = yaml.safe_load(path.read_text())
        if crd["spec"]["names"]["kind"] == kind:
            version = next(v for v in crd["spec"]["versions"] if v["storage"])
            schema: dict[str, Any] = _pruned(version["schema"]["openAPIV3Schema"])
            return schema
    raise AssertionError(f"no CRD schema for {kind} in {CRDS}")


def _pruned(schema: Any) -> Any:
    """The schema with unknown fields refused, as the API server prunes (drops) them."""
    if isinstance(schema, list):
        return [_pruned(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _pruned(v) for k, v in schema.items()}
    preserve = schema.get("x-kubernetes-preserve-unknown-fields")
    if "properties" in schema and "additionalProperties" not in schema and not preserve:
        out["additionalProperties"] = False
    return out


def validate(obj: Manifest, kube_version: str) -> None:
    """Raise when ``obj`` does not match its kind's schema (built-in or CRD)."""
    if obj["apiVersion"] in {"keda.sh/v1alpha1", "monitoring.coreos.com/v1"}:
        jsonschema.validate(obj, _crd_schema(obj["kind"]))
        return
    kubernetes_validate.validate(obj, kube_version, strict=True)

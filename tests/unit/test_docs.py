"""The README and docs/ hold together: every relative link resolves (file and heading), and the
operations manual's tables name every setting and metric the code defines.

The settings come from ``schemas.settings.Settings`` and the vendor variables of
``schemas/kinds.toml``; the metrics from registering ``schemas.metrics``' two catalogs in a
fresh registry, so a setting or metric added to the code without a line in the docs fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from producer.jobs.batch.lines import parse_batch_file
from producer.jobs.jobfile import parse_job_file
from schemas.kinds import key_variables, url_variables
from schemas.metrics import FrontendMetrics, WorkerMetrics
from schemas.registry import load_registry
from schemas.settings import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
OPERATIONS = ROOT / "docs" / "operations.md"
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
# Vendor credentials are read by their SDKs' own names, not as fields of their own.
_BY_VARIABLE = {"vendor_keys", "vendor_urls"}


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors of a Markdown page's headings."""
    anchors = set()
    for heading in re.findall(r"(?m)^#{1,6} (.+)$", page.read_text()):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


def _links(page: Path) -> list[str]:
    text = re.sub(r"(?s)```.*?```", "", page.read_text())
    return [t for t in _LINK.findall(text) if not re.match(r"[a-z]+:", t)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    links = _links(page)
    for link in links:
        path, _, anchor = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        assert target.exists(), f"{page.name}: {link} names no file"
        if anchor:
            assert anchor in _anchors(target), f"{page.name}: {link} names no heading"


def test_the_pages_link_to_each_other() -> None:
    readme = set(_links(ROOT / "README.md"))
    for page in (ROOT / "docs").glob("*.md"):
        assert f"docs/{page.name}" in readme, f"the README links to {page.name}"


def _table_names(section: str) -> set[str]:
    """The backquoted names in the first column of the tables under ``## section``."""
    text = OPERATIONS.read_text()
    start = text.index(f"\n## {section}\n")
    end = text.find("\n## ", start + 1)
    rows = [line for line in text[start:end].splitlines() if line.startswith("| `")]
    return {name for row in rows for name in re.findall(r"`([^`]+)`", row.split("|")[1])}


def test_the_settings_table_names_every_setting() -> None:
    fields = {n: f for n, f in Settings.model_fields.items() if n not in _BY_VARIABLE}
    # A standard variable (OpenTelemetry's) is read by its own name, not under KC_.
    expected = {
        f.validation_alias if isinstance(f.validation_alias, str) else ENV_PREFIX + n.upper()
        for n, f in fields.items()
    }
    expected |= set(key_variables()) | set(url_variables())
    named = _table_names("Settings")
    assert expected - named == set(), "settings missing from docs/operations.md"
    assert named - expected == set(), "docs/operations.md names settings the code lacks"


def test_the_metrics_table_names_every_metric() -> None:
    registry = CollectorRegistry()
    FrontendMetrics.create(registry)
    WorkerMetrics.create(registry)
    defined = {
        family.name + ("_total" if family.type == "counter" else "")
        for family in registry.collect()
    }
    named = _table_names("Metrics")
    assert defined - named == set(), "metrics missing from docs/operations.md"
    assert named - defined == set(), "docs/operations.md names metrics the code lacks"


def test_the_readme_tour_input_lines_are_accepted() -> None:
    readme = (ROOT / "README.md").read_text()
    (batch_line,) = re.findall(r"```json\n(.*?)\n```", readme, re.DOTALL)
    (job_line,) = re.findall(r"\(`(\{\"custom_id\".*?\})`\)", readme.replace("\n", " "))
    batch = parse_batch_file(
        batch_line.encode(), load_registry(), Settings(), "/v1/chat/completions"
    )
    job = parse_job_file([job_line], load_registry())
    assert (len(batch.lines), batch.problems) == (1, [])
    assert (len(job.lines), job.problems) == (1, [])

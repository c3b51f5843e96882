"""The metrics that operators read about and chart are the metrics the services expose.

docs/operations.md explains every metric and deploy/dashboards/ charts them; a renamed or
new metric must show up in both, or an operator's alert silently watches nothing.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import re
from pathlib import Path

import prometheus_client
import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = (
    "punchcard_platform",
    "punchcard_receipt_consumer",
    "punchcard_returns",
    "punchcard_coupon_query",
)
_NAME = re.compile(r"\bpunchcard_[a-z0-9_]+")
_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "summary": ("_sum", "_count", ""),
    "gauge": ("",),
    "info": ("_info",),
}


def registered() -> dict[str, str]:
    """Every Punchcard metric family the services' modules register, by name and type."""
    for package_name in PACKAGES:
        package = importlib.import_module(package_name)
        for module in pkgutil.walk_packages(package.__path__, f"{package_name}."):
            if not module.name.endswith("__main__"):
                importlib.import_module(module.name)
    return {
        family.name: family.type
        for family in prometheus_client.REGISTRY.collect()
        if family.name.startswith("punchcard_")
    }


def exposed_names() -> set[str]:
    """The series names Prometheus scrapes for those families (``_total``, ``_bucket``...)."""
    return {
        name + suffix
        for name, kind in registered().items()
        for suffix in _SUFFIXES.get(kind, ("",))
    }


def test_every_metric_a_service_exposes_is_explained_in_operations() -> None:
    """docs/operations.md names each family as it is scraped (counters with _total)."""
    documented = set(_NAME.findall((ROOT / "docs" / "operations.md").read_text("utf-8")))
    families = registered()
    assert families
    missing = [
        name
        for name, kind in families.items()
        if not {name + suffix for suffix in _SUFFIXES.get(kind, ("",))} & documented
        and name not in documented
    ]
    assert missing == []


@pytest.mark.parametrize(
    "path",
    [ROOT / "docs" / "operations.md", *sorted((ROOT / "deploy" / "dashboards").glob("*.json"))],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_every_metric_named_in_the_docs_and_dashboards_exists(path: Path) -> None:
    """A query or an alert over a metric nobody exposes would watch nothing, silently."""
    text = path.read_text("utf-8")
    if path.suffix == ".json":
        json.loads(text)
    named = set(_NAME.findall(text))
    assert named
    assert sorted(named - exposed_names() - set(registered())) == []

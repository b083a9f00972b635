"""configs/grafana-rollout.json: valid JSON whose every query names a family the server exposes
on /metrics (scraped from the real app after a code entry, a refusal and a token request), with
label names the family has, and route labels the server writes."""

from __future__ import annotations

import json
import re
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from server.registry.service import Principal
from tests.helpers.app import Api
from tests.helpers.fixtures import REPO_ROOT

DASHBOARD = REPO_ROOT / "configs" / "grafana-rollout.json"
OP = Principal("test", "operator")
METRIC = re.compile(r"\b(imprint_[a-z0-9_]+)(\{[^}]*\})?")
MATCHER = re.compile(r'([a-z_]+)\s*(?:=~|!=|!~|=)\s*"([^"]*)"')
SUFFIXES = ("_bucket", "_sum", "_count")


def queries(node: Any) -> list[str]:
    """Every `expr` of the panels and the query of each templating variable."""
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "definition") and isinstance(value, str):
                found.append(value)
            else:
                found += queries(value)
    elif isinstance(node, list):
        for item in node:
            found += queries(item)
    return found


async def test_every_dashboard_query_names_a_family_on_metrics(api: Api) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["panels"]
    assert all(p["datasource"]["uid"] == "${datasource}" for p in dashboard["panels"])

    await api.registry.create_tenant(OP, "acme", "Acme")
    await api.registry.add_device(OP, "acme", "02:00:5e:30:00:01", "Lobby")
    await api.registry.add_device(OP, "acme", "02:00:5e:30:00:02", "Lobby")
    (code,) = await api.registry.generate_codes(OP, "acme", ["02:00:5e:30:00:01"])
    for body in (
        {"mac": code.mac, "code": code.code},
        {"mac": "02:00:5e:30:00:02", "code": "BBBB-BBBB"},  # no code issued: an error
    ):
        async with api.client.post("/provision", json=body) as r:
            assert r.status in (200, 409), await r.text()
    async with api.client.post("/oauth2/token", data={"grant_type": "password"}) as r:
        assert r.status in (400, 401)
    async with api.client.get("/metrics") as r:
        text = await r.text()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    exposed: dict[str, tuple[str, set[str], dict[str, set[str]]]] = {}
    for fam in families.values():
        name = fam.name + ("_total" if fam.type == "counter" else "")
        labels: dict[str, set[str]] = {}
        for sample in fam.samples:
            for k, v in sample.labels.items():
                labels.setdefault(k, set()).add(v)
        exposed[name] = (fam.type, set(labels), labels)

    names = set()
    for query in queries(dashboard):
        for metric, selector in METRIC.findall(query):
            base = metric
            for suffix in SUFFIXES:
                if metric.endswith(suffix) and metric.removesuffix(suffix) in exposed:
                    base = metric.removesuffix(suffix)
            assert base in exposed, f"{query!r} names {metric}, which /metrics does not have"
            kind, labelnames, values = exposed[base]
            if metric != base:
                assert kind == "histogram", (metric, kind)
            for label, value in MATCHER.findall(selector):
                assert label in labelnames | ({"le"} if kind == "histogram" else set()), (
                    f"{query!r}: {base} has no label {label} (it has {sorted(labelnames)})"
                )
                if label == "route":
                    assert value in values["route"], f"no route {value!r} on /metrics"
            names.add(base)
    assert {"imprint_tenant_devices", "imprint_rollout_errors_total"} <= names

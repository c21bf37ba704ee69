"""The Grafana dashboards: well-formed, current panel types, metric names that exist, and
every panel query answering with data from a real Prometheus scraping real srd daemons."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from importlib.resources import files
from pathlib import Path
from typing import Any

import boto3  # type: ignore[import-untyped]  # no stubs installed; seeding only
import pytest
import yaml

from srd.evaluation.export import export_rules
from srd.evaluation.rulepacks import load_rule_packs
from srd.journal import open_journal
from srd.probes.stream_metrics import ACTIVE_STREAMS, TRANSACTION_LATENCY, VIEWER_COUNT
from srd.runtime import DaemonMetrics
from srd.simulate.measurement import journal_drill
from tests.support import promstack
from tests.support.daemon import free_port
from tests.support.evalkit import PLATFORM_BLOCK

ROOT = Path(__file__).parents[2]
DASHBOARDS = sorted((ROOT / "dashboards").glob("*.json"))
SANDBOX_RULES = Path(str(files("srd.simulate.sandbox").joinpath("rules")))
PANEL_TYPES = {"timeseries", "stat", "gauge", "heatmap", "table", "bargauge"}
LAYOUT_TYPES = {"row"}
EXTERNAL_NAMES = {
    # node exporter
    "node_cpu_seconds_total",
    # the platform's stream exporter (srd re-exports them once it has scraped a source)
    ACTIVE_STREAMS,
    VIEWER_COUNT,
    TRANSACTION_LATENCY + "_bucket",
}

_PROMQL_WORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "offset", "bool"}
_PROMQL_WORDS |= {"group_left", "group_right", "inf", "nan"}


def dashboard(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return doc


def panels(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in doc["panels"]:
        yield panel
        yield from panel.get("panels", [])


def exprs(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, expr) of every target, and the metric behind each query variable."""
    found = [
        (panel["title"], target["expr"])
        for panel in panels(doc)
        for target in panel.get("targets", [])
    ]
    for var in doc["templating"]["list"]:
        if var["type"] == "query":
            match = re.fullmatch(r"label_values\((\w+),\s*\w+\)", var["definition"])
            assert match, f"variable {var['name']}: unsupported query {var['definition']}"
            found.append((f"${var['name']}", match[1]))
    return found


def concrete(expr: str) -> str:
    """The query as Grafana would send it: intervals and variables filled in."""
    expr = expr.replace("$__rate_interval", "1m").replace("$__interval", "15s")
    return re.sub(r"\$\{?\w+\}?", ".*", expr)


def metric_names(expr: str) -> set[str]:
    """Metric names an expr reads: identifiers that are not functions, keywords, label
    names in matchers or grouping clauses, strings or durations."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', "", expr)
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.])([A-Za-z_:][\w:]*)\s*(\()?", text):
        if match[2] is None and match[1].lower() not in _PROMQL_WORDS:
            names.add(match[1])
    return names


def srd_names() -> set[str]:
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"]}
    return {
        family.name + suffix
        for family in DaemonMetrics().registry.collect()
        for suffix in suffixes.get(family.type, [""])
    }


def recorded_names(tmp: Path) -> set[str]:
    written = [
        path
        for i, rules in enumerate((SANDBOX_RULES, ROOT / "rules"))
        for path in export_rules(load_rule_packs([rules]), tmp / str(i))
    ]
    names = set()
    for path in written:
        if path.name.endswith(".rules.yml"):
            doc = yaml.safe_load(path.read_text(encoding="utf-8"))
            names |= {r["record"] for g in doc["groups"] for r in g["rules"] if "record" in r}
    return names


def test_there_are_the_three_dashboards() -> None:
    assert [p.name for p in DASHBOARDS] == [
        "blockchain-health.json",
        "dr-readiness.json",
        "slo.json",
    ]
    titles = {dashboard(p)["title"] for p in DASHBOARDS}
    assert "Vilokanam Blockchain Health" in titles


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_dashboard_uses_current_panels_unique_ids_and_a_datasource_variable(path: Path) -> None:
    doc = dashboard(path)
    assert doc["schemaVersion"] >= 39
    all_panels = list(panels(doc))
    types = {p["type"] for p in all_panels}
    assert types <= PANEL_TYPES | LAYOUT_TYPES, types - PANEL_TYPES - LAYOUT_TYPES
    ids = [p["id"] for p in all_panels]
    assert len(ids) == len(set(ids))
    [datasource] = [v for v in doc["templating"]["list"] if v["name"] == "datasource"]
    assert (datasource["type"], datasource["query"]) == ("datasource", "prometheus")
    for panel in all_panels:
        if panel["type"] in LAYOUT_TYPES:
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        assert all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"])
        assert "unit" in panel["fieldConfig"]["defaults"], f"{panel['title']}: no unit"


def test_metric_names_are_parsed_out_of_queries() -> None:
    expr = (
        'sum by (le) (rate(a_bucket{x="b c"}[5m])) / ignoring (w) b:c:d{y=~"$slo"}'
        " or on() vector(0) and time() - c_total offset 1m"
    )
    assert metric_names(expr) == {"a_bucket", "b:c:d", "c_total"}


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_every_query_reads_metrics_srd_or_its_rules_or_the_platform_export(
    path: Path, tmp_path: Path
) -> None:
    known = srd_names() | recorded_names(tmp_path) | EXTERNAL_NAMES
    unknown = {
        f"{title}: {name}"
        for title, expr in exprs(dashboard(path))
        for name in metric_names(expr)
        if name not in known
    }
    assert not unknown


# --- end to end ------------------------------------------------------------------------------

HOUR = 3600.0
DR_PACK = (
    PLATFORM_BLOCK
    + """\
srd:
  environment: e2e
  s3: {endpoint_url: "MOTO", timeout: 2s, interval: 2s}
  backups:
    database_failure: [&db {bucket: "vilokanam-backups-{environment}", prefix: database/,
                            pattern: "postgres-backup-{timestamp}.sql.gz", retention_count: 30}]
    blockchain_node_failure: [&chain {bucket: "vilokanam-backups-{environment}",
                                      prefix: blockchain/,
                                      pattern: "blockchain-state-{timestamp}.tar.gz",
                                      retention_count: 7}]
    complete_data_center_outage: [*db, *chain]
"""
)
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_EC2_METADATA_DISABLED": "true",
}
QUERY_DEADLINE = 90.0
"""For every query of every dashboard together, after Prometheus sees its targets up."""


def seed_backups(moto_url: str) -> None:
    s3 = boto3.client(
        "s3",
        endpoint_url=moto_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    bucket = "vilokanam-backups-e2e"
    s3.create_bucket(Bucket=bucket)
    now = time.time()
    for prefix, name, count, spacing in (
        ("database/", "postgres-backup-{}.sql.gz", 30, HOUR),
        ("blockchain/", "blockchain-state-{}.tar.gz", 7, 6 * HOUR),
    ):
        for i in range(count):
            stamp = datetime.fromtimestamp(now - 600 - i * spacing, UTC).strftime("%Y%m%d-%H%M%S")
            s3.put_object(Bucket=bucket, Key=prefix + name.format(stamp), Body=b"backup")


async def record_a_drill(state_dir: Path) -> None:
    """What ``srd simulate --target real --mode armed`` leaves in the journal of the srd it
    drilled: a database_failure drill that recovered in 1 h 1 min."""
    journal = await open_journal(state_dir)
    try:
        await journal_drill(
            journal,
            drill="database_failure",
            scenario="database_failure",
            seconds=3660.0,
            passed=True,
            report="drill-reports/database_failure",
        )
    finally:
        await journal.close()


def host_port(url: str) -> str:
    return url.removeprefix("http://")


def test_every_dashboard_query_returns_data_from_a_real_prometheus(
    tmp_path: Path, moto_url: str
) -> None:
    started = time.monotonic()
    rules = export_rules(load_rule_packs([SANDBOX_RULES]), tmp_path / "rules")
    rule_files = [p for p in rules if p.name.endswith(".rules.yml")]
    seed_backups(moto_url)
    dr_dir = tmp_path / "dr"
    dr_dir.mkdir()
    (dr_dir / "dr.yaml").write_text(DR_PACK.replace("MOTO", moto_url), encoding="utf-8")
    asyncio.run(record_a_drill(dr_dir / "state"))
    dr_config, dr_port = dr_dir / "srd.yaml", free_port()
    dr_config.write_text(
        f"mode: observe\nstate_dir: {dr_dir / 'state'}\n"
        f"server: {{listen: '127.0.0.1:{dr_port}'}}\nevaluation: {{rules: [dr.yaml]}}\n",
        encoding="utf-8",
    )
    sandbox_args = ["run", "--sandbox", "--listen", "127.0.0.1:{port}"]
    sandbox_args += ["--state-dir", str(tmp_path / "sandbox")]
    with (
        promstack.srd(sandbox_args, tmp_path / "sandbox.log") as sandbox,
        promstack.srd(
            ["run", "--config", str(dr_config)], tmp_path / "dr.log", AWS_ENV, dr_port
        ) as dr_srd,
        promstack.node_exporter(tmp_path) as node,
        promstack.prometheus(
            tmp_path / "prometheus",
            {"srd": [host_port(sandbox), host_port(dr_srd)], "node": [node]},
            rule_files,
        ) as prometheus,
    ):
        up = time.monotonic()
        queries = {
            (path.stem, title, concrete(expr))
            for path in DASHBOARDS
            for title, expr in exprs(dashboard(path))
        }
        errors = {q: e for q in queries if (e := prometheus.error(q[2])) is not None}
        assert not errors
        # Every panel must answer: one that cannot have data here is a failure, not a skip.
        pending = set(queries)
        deadline = time.monotonic() + QUERY_DEADLINE
        while time.monotonic() < deadline:
            pending = {q for q in pending if not prometheus.query(q[2])}
            if not pending:
                break
            time.sleep(1)
        done = time.monotonic()
    # "Last measured RTO" and "Last drill" too: the DR srd reads the drill from its journal.
    assert pending == set(), "\n".join(sorted(f"{d} / {t}: {e}" for d, t, e in pending))
    print(
        f"\n{len(queries)} queries; processes up in {up - started:.1f}s, "
        f"all answered in {done - up:.1f}s"
    )

"""Prometheus relabelling, step by step, with the semantics Prometheus documents, and
against a real Prometheus."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from srd.config.discovery import ScrapeConfigSource
from srd.probes.discovery import scrape_config_targets
from srd.probes.relabel import RelabelConfig, relabel
from tests.support import promstack
from tests.support.daemon import free_port

POD = {
    "__address__": "10.1.0.11:8080",
    "__meta_kubernetes_pod_label_app": "web-creator",
    "__meta_kubernetes_pod_annotation_prometheus_io_port": "9090",
    "job": "web",
}


def step(**config: Any) -> RelabelConfig:
    return RelabelConfig.model_validate(config)


def test_replace_joins_source_labels_expands_groups_and_an_empty_result_removes_the_label() -> None:
    address = step(
        source_labels=["__address__", "__meta_kubernetes_pod_annotation_prometheus_io_port"],
        regex=r"([^:]+)(?::\d+)?;(\d+)",
        replacement="${1}:$2",
        target_label="__address__",
    )
    named = step(
        source_labels=["__meta_kubernetes_pod_label_app"],
        regex="web-(?P<role>.+)",
        replacement="$role",
        target_label="role",
    )
    emptied = step(source_labels=["nothing"], target_label="job")
    labels = relabel(POD, [address, named, emptied])
    assert labels is not None
    assert labels["__address__"] == "10.1.0.11:9090"
    assert labels["role"] == "creator"
    assert "job" not in labels  # (.*) matched "", and "" removes the label


def test_replace_leaves_the_labels_alone_when_the_anchored_regex_does_not_match() -> None:
    unmatched = step(source_labels=["job"], regex="we", target_label="x", replacement="y")
    assert relabel(POD, [unmatched]) == POD


def test_a_group_name_runs_on_as_in_go_and_dollars_escape() -> None:
    config = step(source_labels=["job"], regex="(w)eb", target_label="x", replacement="$1x-$$1")
    assert relabel(POD, [config]) == {**POD, "x": "-$1"}  # $1x is the unknown group "1x"


@pytest.mark.parametrize(
    ("action", "regex", "kept"),
    [("keep", "web", True), ("keep", "we", False), ("drop", "web", False), ("drop", "x", True)],
)
def test_keep_and_drop_match_the_whole_value(action: str, regex: str, kept: bool) -> None:
    config = step(source_labels=["job"], regex=regex, action=action)
    assert (relabel(POD, [config]) is not None) is kept


def test_keepequal_and_dropequal_compare_with_the_target_label() -> None:
    same = {"a": "1", "b": "1"}
    assert relabel(same, [step(source_labels=["a"], target_label="b", action="keepequal")])
    assert relabel(same, [step(source_labels=["a"], target_label="b", action="dropequal")]) is None


def test_hashmod_takes_the_low_64_bits_of_the_md5_as_prometheus_does() -> None:
    config = step(source_labels=["__address__"], modulus=8, target_label="shard", action="hashmod")
    labels = relabel(POD, [config])
    low_64_bits = int(hashlib.md5(b"10.1.0.11:8080").hexdigest()[16:], 16)  # noqa: S324
    assert labels is not None and labels["shard"] == str(low_64_bits % 8)


def test_labelmap_labeldrop_labelkeep_and_case_actions() -> None:
    labels = relabel(
        POD,
        [
            step(action="labelmap", regex="__meta_kubernetes_pod_label_(.+)"),
            step(source_labels=["app"], target_label="APP", action="uppercase"),
            step(action="labeldrop", regex="__meta_.*"),
        ],
    )
    assert labels == {
        "__address__": "10.1.0.11:8080",
        "job": "web",
        "app": "web-creator",
        "APP": "WEB-CREATOR",
    }
    assert relabel(POD, [step(action="labelkeep", regex="job|__address__")]) == {
        "__address__": "10.1.0.11:8080",
        "job": "web",
    }


def test_yaml_scalars_are_read_as_written_and_actions_in_any_case() -> None:
    config = step(source_labels=["up"], regex=True, action="Keep")
    assert (config.regex, config.action) == ("true", "keep")


@pytest.mark.parametrize(
    ("config", "reason"),
    [
        ({"action": "hashmod", "target_label": "x"}, "needs modulus"),
        ({"action": "replace"}, "needs target_label"),
        ({"action": "explode"}, "Input should be"),
        ({"regex": "("}, "invalid regular expression"),
    ],
)
def test_a_config_prometheus_would_refuse_is_refused(config: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        step(**config)


PARITY = r"""
global: {scrape_interval: 1h, scrape_timeout: 10s}
scrape_configs:
  - job_name: parity
    static_configs:
      - targets: ['10.1.0.11:8080', '10.1.0.12:8080', '10.1.0.13:8080']
        labels:
          __meta_kubernetes_pod_annotation_prometheus_io_scrape: "true"
          __meta_kubernetes_pod_annotation_prometheus_io_port: "9090"
          __meta_kubernetes_pod_label_app: web-creator
          __meta_kubernetes_pod_label_tier: Web
      - targets: ['10.1.0.14:8080']
        labels: {__meta_kubernetes_pod_annotation_prometheus_io_scrape: "false"}
    relabel_configs:
      - source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_scrape]
        action: keep
        regex: true
      - {source_labels: [__address__], regex: '10\.1\.0\.13:.*', action: drop}
      - source_labels: [__address__, __meta_kubernetes_pod_annotation_prometheus_io_port]
        regex: ([^:]+)(?::\d+)?;(\d+)
        replacement: $1:$2
        target_label: __address__
      - {action: labelmap, regex: __meta_kubernetes_pod_label_(.+)}
      - {source_labels: [tier], target_label: tier_lower, action: lowercase}
      - {source_labels: [tier], target_label: tier_upper, action: uppercase}
      - {source_labels: [__address__], modulus: 4, target_label: shard, action: hashmod}
      - source_labels: [app]
        regex: web-(?P<role>.+)
        replacement: ${role}-$1-$1x-$$
        target_label: role
      - {target_label: __param_module, replacement: http_2xx}
      - {source_labels: [job], target_label: env, replacement: prod-$1}
      - {source_labels: [app], target_label: app, action: keepequal}
      - {action: labeldrop, regex: tier}
"""


def test_relabelling_gives_the_targets_and_labels_a_real_prometheus_gives(
    tmp_path: Path,
) -> None:
    exe = promstack.binary("prometheus", package="prometheus")
    config = tmp_path / "prometheus.yml"
    config.write_text(PARITY)
    address = f"127.0.0.1:{free_port()}"
    args = [exe, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}"]
    args.append(f"--web.listen-address={address}")
    with promstack.started(args, tmp_path / "prometheus.log") as process:

        def targets() -> list[dict[str, Any]]:
            status, body = promstack.get(f"http://{address}/api/v1/targets")
            return list(json.loads(body)["data"]["activeTargets"]) if status == 200 else []

        promstack.wait_until(lambda: len(targets()) == 2, 30, "prometheus targets", process)
        seen = sorted((t["scrapeUrl"], t["labels"]) for t in targets())

    source = ScrapeConfigSource.model_validate(
        {"name": "parity", "file": str(config), "template": {"keep": ["up"]}}
    )
    ours = asyncio.run(scrape_config_targets(source))
    assert sorted((t.url, dict(t.labels)) for t in ours) == seen
    assert seen[0][0] == "http://10.1.0.11:9090/metrics?module=http_2xx"

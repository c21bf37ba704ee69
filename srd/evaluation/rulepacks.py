"""Rule packs: YAML files of SLOs in srd's own format, OpenSLO v1, or Sloth ``prometheus/v1``.

The format is told by the content: ``apiVersion: openslo/v1`` documents, a ``version:
prometheus/v1`` Sloth spec, or srd's ``slos:`` list. Every error names file, line and key, and
a tier that can never fire (factor × (1 − objective) ≥ 1) is rejected at load.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from srd.config.durations import Duration, format_duration, parse_duration
from srd.config.files import (
    ConfigError,
    ConfigIssue,
    child_node,
    issue_at,
    load_yaml_documents,
    read_config_text,
    validate_model,
)
from srd.config.types import Strict
from srd.evaluation.chainrules import ChainHealth, parse_chain_pack
from srd.evaluation.recovery import RecoveryPack, parse_recovery_pack, recovery_alerts
from srd.evaluation.rules import RuleGroup, Selector
from srd.evaluation.slo import CALENDAR_MONTH, DAY, DEFAULT_TIERS, Sli, Slo, Tier

Percent = Annotated[float, Field(gt=0, lt=100)]
Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")]


class TierSpec(Strict):
    budget_percent: Percent = Field(
        description="Share of the period's budget spent in long_window."
    )
    long_window: Duration
    short_window: Duration = Field(description="Usually long_window / 12: resets the alert fast.")
    severity: str = "page"
    enabled: bool = True
    for_: Duration = Field(0.0, alias="for")


class EventsSpec(Strict):
    total: str
    bad: str | None = None
    good: str | None = None


class LatencySpec(Strict):
    histogram: str = Field(description="Histogram base name with matchers, without _bucket.")
    threshold: float = Field(gt=0, description="Seconds: requests at or below it are good.")


class SliSpec(Strict):
    events: EventsSpec | None = None
    latency: LatencySpec | None = None


class AlertingSpec(Strict):
    tiers: list[TierSpec] | None = Field(None, description="Default: the four workbook tiers.")


class SloSpec(Strict):
    name: Name
    service: Name
    description: str = ""
    objective: Percent
    period: Duration | None = None
    calendar: Literal["month"] | None = None
    timezone: str = "UTC"
    sli: SliSpec
    min_events: float = Field(0, ge=0, description="No alert while the long window saw fewer.")
    alert_when_no_data: bool = False
    labels: dict[str, str] = Field(default_factory=dict)
    alerting: AlertingSpec = Field(default_factory=AlertingSpec)


class SrdPack(Strict):
    slos: list[SloSpec]


class _Loose(BaseModel):
    # OpenSLO and Sloth carry fields srd does not use (displayName, annotations …).
    model_config = ConfigDict(extra="ignore", frozen=True)


class MetricSource(_Loose):
    type: str = "Prometheus"
    spec: dict[str, Any]


class MetricRef(_Loose):
    metricSource: MetricSource


class RatioMetric(_Loose):
    counter: bool = True
    good: MetricRef | None = None
    bad: MetricRef | None = None
    total: MetricRef


class SliObjSpec(_Loose):
    ratioMetric: RatioMetric


class Metadata(_Loose):
    name: Name


class InlineSli(_Loose):
    metadata: Metadata | None = None
    spec: SliObjSpec


class TimeWindow(_Loose):
    duration: str
    isRolling: bool = True
    calendar: dict[str, str] | None = None


class ObjectiveSpec(_Loose):
    target: float | None = Field(None, gt=0, lt=1)
    targetPercent: float | None = Field(None, gt=0, lt=100)


class OpenSloSpec(_Loose):
    service: Name
    description: str = ""
    indicator: InlineSli | None = None
    indicatorRef: str | None = None
    timeWindow: list[TimeWindow] = Field(min_length=1, max_length=1)
    objectives: list[ObjectiveSpec] = Field(min_length=1, max_length=1)
    alertPolicies: list[dict[str, Any]] = Field(default_factory=list)


class OpenSloDoc(Strict):
    apiVersion: Literal["openslo/v1"]
    kind: Literal[
        "SLO",
        "SLI",
        "AlertPolicy",
        "Service",
        "AlertCondition",
        "AlertNotificationTarget",
        "DataSource",
    ]
    metadata: Metadata
    spec: dict[str, Any]


class SlothAlert(_Loose):
    disable: bool = False
    labels: dict[str, str] = Field(default_factory=dict)


class SlothAlerting(_Loose):
    page_alert: SlothAlert = Field(default_factory=SlothAlert)
    ticket_alert: SlothAlert = Field(default_factory=SlothAlert)


class SlothEvents(Strict):
    error_query: str
    total_query: str


class SlothSli(Strict):
    events: SlothEvents


class SlothSlo(_Loose):
    name: Name
    objective: Percent
    description: str = ""
    labels: dict[str, str] = Field(default_factory=dict)
    sli: SlothSli
    alerting: SlothAlerting = Field(default_factory=SlothAlerting)


class SlothSpec(_Loose):
    version: Literal["prometheus/v1"]
    service: Name
    labels: dict[str, str] = Field(default_factory=dict)
    slos: list[SlothSlo] = Field(min_length=1)

    @field_validator("version", mode="before")
    @classmethod
    def _str(cls, value: Any) -> Any:
        return str(value)


@dataclass(frozen=True)
class RulePack:
    """The rules of one file: SLOs (srd, OpenSLO or Sloth format), chain health, or the
    disaster-recovery block."""

    file: str
    slos: tuple[Slo, ...] = field(default_factory=tuple)
    chain: ChainHealth | None = None
    recovery: RecoveryPack | None = None

    def groups(self) -> list[RuleGroup]:
        """The pack's rule groups beyond its SLOs, in evaluation order."""
        groups: list[RuleGroup] = []
        if self.chain is not None:
            groups.append(self.chain.group())
        if self.recovery is not None:
            groups.append(recovery_alerts())
        return groups


def rule_files(paths: Iterable[Path]) -> list[Path]:
    """Files named directly, and every ``*.yaml``/``*.yml`` in named directories, sorted."""
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out += sorted(p for p in path.iterdir() if p.suffix in {".yaml", ".yml"})
        else:
            out.append(path)
    return out


def load_rule_packs(paths: Iterable[Path]) -> list[RulePack]:
    """Load every file; ConfigError lists the problems of all of them (and duplicate names)."""
    packs, issues = [], []
    for path in rule_files(paths):
        try:
            packs.append(parse_rule_pack(read_config_text(path), str(path)))
        except ConfigError as exc:
            issues += exc.issues
    seen: dict[str, str] = {}
    for pack in packs:
        for slo in pack.slos:
            if slo.name in seen:
                issues.append(
                    ConfigIssue(pack.file, slo.name, f"SLO name already used in {seen[slo.name]}")
                )
            seen.setdefault(slo.name, pack.file)
    recovery = [pack.file for pack in packs if pack.recovery is not None]
    for extra in recovery[1:]:
        issues.append(
            ConfigIssue(extra, "disaster_recovery", f"already defined in {recovery[0]}; keep one")
        )
    if issues:
        raise ConfigError(issues)
    return packs


def parse_rule_pack(text: str, filename: str) -> RulePack:
    docs = [(node, data) for node, data in load_yaml_documents(text, filename) if data is not None]
    if not docs:
        return RulePack(filename)
    for node, data in docs:
        if not isinstance(data, dict):
            raise ConfigError([issue_at(filename, node, [], "each document must be a mapping")])
    first = docs[0][1]
    if str(first.get("apiVersion", "")).startswith("openslo"):
        return RulePack(filename, tuple(_openslo(docs, filename)))
    if "version" in first:
        return RulePack(filename, tuple(_sloth(docs, filename)))
    if len(docs) > 1:
        raise ConfigError([issue_at(filename, docs[1][0], [], "srd rule packs are one document")])
    node, data = docs[0]
    if "slos" not in data and "chain" in data:
        return RulePack(filename, chain=parse_chain_pack(text, filename))
    if "slos" not in data and "disaster_recovery" in data:
        return RulePack(filename, recovery=parse_recovery_pack(text, filename))
    pack = validate_model(SrdPack, data, filename, node)
    return RulePack(filename, tuple(_srd_slos(pack, filename, node)))


def _srd_slos(pack: SrdPack, filename: str, node: yaml.Node | None) -> list[Slo]:
    slos, issues = [], []
    for i, spec in enumerate(pack.slos):
        at: list[Any] = ["slos", i]
        try:
            sli = _srd_sli(spec.sli)
        except ValueError as exc:
            issues.append(issue_at(filename, node, [*at, "sli"], str(exc)))
            continue
        if (spec.period is None) == (spec.calendar is None):
            issues.append(issue_at(filename, node, at, "give exactly one of period or calendar"))
            continue
        if spec.calendar is not None:
            try:
                ZoneInfo(spec.timezone)
            except (ZoneInfoNotFoundError, ValueError):
                issues.append(issue_at(filename, node, [*at, "timezone"], "unknown time zone"))
                continue
        tiers: tuple[Tier, ...] = DEFAULT_TIERS
        if spec.alerting.tiers is not None:
            tiers = tuple(
                Tier(t.budget_percent, t.long_window, t.short_window, t.severity, t.enabled, t.for_)
                for t in spec.alerting.tiers
            )
        slo = Slo(
            name=spec.name,
            service=spec.service,
            objective=spec.objective / 100,
            period=spec.period or CALENDAR_MONTH,
            sli=sli,
            tiers=tiers,
            timezone=spec.timezone if spec.calendar else None,
            min_events=spec.min_events,
            alert_when_no_data=spec.alert_when_no_data,
            description=spec.description,
            labels=spec.labels,
            source=filename,
        )
        tier_issues = check_tiers(slo)
        issues += [
            issue_at(filename, node, [*at, "alerting", "tiers", j], reason)
            for j, reason in tier_issues
        ]
        slos.append(slo)
    if issues:
        raise ConfigError(issues)
    return slos


def _srd_sli(spec: SliSpec) -> Sli:
    if (spec.events is None) == (spec.latency is None):
        raise ValueError("give exactly one of events or latency")
    if spec.events is not None:
        ev = spec.events
        if (ev.bad is None) == (ev.good is None):
            raise ValueError("events needs exactly one of bad or good, and total")
        return Sli(
            total=Selector.parse(ev.total),
            bad=Selector.parse(ev.bad) if ev.bad else None,
            good=Selector.parse(ev.good) if ev.good else None,
        )
    assert spec.latency is not None  # noqa: S101 - checked above
    base = Selector.parse(spec.latency.histogram)
    # prometheus_client writes le as Go does: 0.5 → "0.5", 1 → "1.0".
    le = repr(float(spec.latency.threshold))
    return Sli(
        total=Selector(f"{base.name}_count", base.equal, base.not_equal),
        good=Selector(
            f"{base.name}_bucket", tuple(sorted((*base.equal, ("le", le)))), base.not_equal
        ),
    )


def check_tiers(slo: Slo) -> list[tuple[int, str]]:
    """(tier index, reason) for each tier that cannot work: one that can never fire, windows
    the wrong way round, or a window longer than the period."""
    out = []
    for j, tier in enumerate(slo.tiers):
        factor = tier.factor(slo.period)
        if tier.enabled and factor * (1 - slo.objective) >= 1:
            out.append(
                (
                    j,
                    f"can never fire: burn-rate factor {factor:g} × error budget "
                    f"{1 - slo.objective:g} = {factor * (1 - slo.objective):g} ≥ 1 (the error "
                    "ratio cannot exceed 1); lower budget_percent or lengthen long_window",
                )
            )
        if tier.short_window >= tier.long_window:
            out.append((j, "short_window must be shorter than long_window"))
        if tier.long_window > slo.period:
            out.append(
                (j, f"long_window is longer than the period ({format_duration(slo.period)})")
            )
    return out


def _raise_tiers(slo: Slo, filename: str, node: yaml.Node | None, at: list[Any]) -> None:
    problems = check_tiers(slo)
    if problems:
        raise ConfigError([issue_at(filename, node, at, reason) for _, reason in problems])


_SUM_RATE = re.compile(
    r"^\s*sum\s*\(\s*rate\s*\(\s*(.*)\[\s*\{\{\s*\.window\s*\}\}\s*\]\s*\)\s*\)\s*$", re.DOTALL
)


def _plain(query: str) -> Selector | None:
    """The selector of ``sum(rate(SELECTOR[{{.window}}]))`` or of a bare selector, if plain."""
    match = _SUM_RATE.match(query)
    try:
        return Selector.parse(match.group(1) if match else query)
    except ValueError:
        return None


def _sloth(docs: Sequence[tuple[yaml.Node, Any]], filename: str) -> list[Slo]:
    node, data = docs[0]
    spec: SlothSpec = validate_model(SlothSpec, data, filename, node)
    slos = []
    for i, s in enumerate(spec.slos):
        events = s.sli.events
        bad, total = _plain(events.error_query), _plain(events.total_query)
        evaluable = bad is not None and total is not None
        sli = (
            Sli(total=total, bad=bad)
            if evaluable
            else Sli(error_query=events.error_query, total_query=events.total_query)
        )
        page, ticket = s.alerting.page_alert, s.alerting.ticket_alert
        tiers = tuple(
            Tier(
                t.budget_percent,
                t.long_window,
                t.short_window,
                (page if t.severity == "page" else ticket).labels.get("severity", t.severity),
                enabled=not (page if t.severity == "page" else ticket).disable,
            )
            for t in DEFAULT_TIERS
        )
        slo = Slo(
            name=s.name,
            service=spec.service,
            objective=s.objective / 100,
            period=30 * DAY,  # Sloth's default period; its specs do not carry one
            sli=sli,
            tiers=tiers,
            description=s.description,
            labels={**spec.labels, **s.labels},
            source=filename,
        )
        _raise_tiers(slo, filename, node, ["slos", i, "objective"])
        slos.append(slo)
    return slos


def _openslo(docs: Sequence[tuple[yaml.Node, Any]], filename: str) -> list[Slo]:
    parsed = [(node, validate_model(OpenSloDoc, data, filename, node)) for node, data in docs]
    slis = {doc.metadata.name: (node, doc) for node, doc in parsed if doc.kind == "SLI"}
    policies = {doc.metadata.name: doc.spec for _, doc in parsed if doc.kind == "AlertPolicy"}
    slos = []
    for node, doc in parsed:
        if doc.kind != "SLO":
            continue
        spec: OpenSloSpec = validate_model(
            OpenSloSpec, doc.spec, filename, child_node(node, "spec")
        )
        if (spec.indicator is None) == (spec.indicatorRef is None):
            raise ConfigError(
                [
                    issue_at(
                        filename, node, ["spec"], "give exactly one of indicator or indicatorRef"
                    )
                ]
            )
        if spec.indicator is not None:
            ratio = spec.indicator.spec.ratioMetric
        elif spec.indicatorRef in slis:
            sli_node, sli_doc = slis[spec.indicatorRef]
            ratio = validate_model(
                SliObjSpec, sli_doc.spec, filename, child_node(sli_node, "spec")
            ).ratioMetric
        else:
            raise ConfigError(
                [
                    issue_at(
                        filename,
                        node,
                        ["spec", "indicatorRef"],
                        f"no SLI named {spec.indicatorRef!r} in this file",
                    )
                ]
            )
        try:
            sli = _openslo_sli(ratio)
            period, timezone = _openslo_window(spec.timeWindow[0])
        except ValueError as exc:
            raise ConfigError([issue_at(filename, node, ["spec"], str(exc))]) from None
        objective = spec.objectives[0]
        target = objective.target or (objective.targetPercent or 0) / 100
        if not target:
            raise ConfigError(
                [
                    issue_at(
                        filename, node, ["spec", "objectives", 0], "give target or targetPercent"
                    )
                ]
            )
        # An alert policy is inline ({kind: AlertPolicy, spec: …}) or {alertPolicyRef: name}.
        no_data = any(
            bool(
                (
                    policies.get(str(p["alertPolicyRef"]), {})
                    if "alertPolicyRef" in p
                    else p.get("spec") or {}
                ).get("alertWhenNoData")
            )
            for p in spec.alertPolicies
        )
        slo = Slo(
            name=doc.metadata.name,
            service=spec.service,
            objective=target,
            period=period,
            sli=sli,
            timezone=timezone,
            alert_when_no_data=no_data,
            description=spec.description,
            source=filename,
        )
        _raise_tiers(slo, filename, node, ["spec", "objectives", 0])
        slos.append(slo)
    return slos


def _openslo_sli(ratio: RatioMetric) -> Sli:
    if (ratio.good is None) == (ratio.bad is None):
        raise ValueError("ratioMetric needs exactly one of good or bad, and total")
    queries = {}
    for key in ("good", "bad", "total"):
        ref: MetricRef | None = getattr(ratio, key)
        if ref is not None:
            query = ref.metricSource.spec.get("query")
            if not isinstance(query, str):
                raise ValueError(f"ratioMetric.{key}.metricSource.spec.query must be a string")
            queries[key] = query
    selectors = {key: _plain(q) for key, q in queries.items()}
    if all(s is not None for s in selectors.values()):
        return Sli(total=selectors["total"], bad=selectors.get("bad"), good=selectors.get("good"))
    if "good" in queries:
        raise ValueError("an export-only (PromQL) OpenSLO SLI must use bad and total, not good")
    return Sli(error_query=_templated(queries["bad"]), total_query=_templated(queries["total"]))


def _templated(query: str) -> str:
    if "{{" in query:
        return query
    return f"sum(rate({query}[{{{{.window}}}}]))"


def _openslo_window(window: TimeWindow) -> tuple[float, str | None]:
    if window.duration.strip().endswith("M"):
        if window.duration.strip() != "1M" or window.isRolling:
            raise ValueError("only a calendar month (duration 1M, isRolling false) is supported")
        timezone = (window.calendar or {}).get("timeZone", "UTC")
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {timezone!r}") from None
        return CALENDAR_MONTH, timezone
    return parse_duration(window.duration), None

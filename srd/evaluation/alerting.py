"""Prometheus alert semantics, per alert instance, with state that survives a restart.

Mirrors ``AlertingRule.Eval`` of Prometheus 2.42: a new true result is pending (and fires in the
same evaluation when there is no ``for``); pending fires once ``at - active_since >= for``;
a pending alert whose condition clears is dropped; a firing one stays firing for
``keep_firing_for`` after it clears, then resolves and is kept (and reported) for 15 m.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import structlog

from srd.evaluation.rules import AlertRule, Outcome
from srd.model import Alert, LabelSet, label_set

log = structlog.get_logger("srd.evaluation.alerting")

RESOLVED_RETENTION = 15 * 60.0
"""How long Prometheus keeps sending a resolved alert."""
OUTAGE_TOLERANCE = 3600.0
"""Saved state older than this is discarded at start, like Prometheus'
``rules.alert.for-outage-tolerance``: after a long outage a half-elapsed ``for`` means nothing."""
PENDING, FIRING, INACTIVE = "pending", "firing", "inactive"


@dataclass
class _Instance:
    labels: LabelSet
    annotations: LabelSet
    state: str
    active_since: float
    fired_at: float | None = None
    resolved_at: float | None = None
    keep_firing_since: float | None = None


def fingerprint(labels: LabelSet) -> str:
    text = "\0".join(f"{k}\0{v}" for k, v in labels)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class AlertStates:
    """Instances of every rule, keyed by alertname and labels; saved to ``path`` when changed."""

    def __init__(self, path: Path | None = None) -> None:
        self._path = path
        self._rules: dict[str, dict[LabelSet, _Instance]] = {}
        self._dirty = False

    def update(
        self, rule: AlertRule, results: Mapping[LabelSet, Outcome], at: float
    ) -> list[Alert]:
        """Apply one evaluation of ``rule`` at ``at``; return the instances that changed state."""
        active = self._rules.setdefault(rule.name, {})
        # An instance that turns pending and fires in one evaluation is one transition.
        changed: dict[LabelSet, _Instance] = {}
        met: set[LabelSet] = set()
        for result_labels, outcome in results.items():
            if not outcome:
                continue
            labels = label_set({**dict(result_labels), **rule.labels, "alertname": rule.name})
            met.add(labels)
            current = active.get(labels)
            if current is None or current.state == INACTIVE:
                active[labels] = _Instance(labels, label_set(rule.annotations), PENDING, at)
                changed[labels] = active[labels]
        for labels, inst in list(active.items()):
            if labels not in met:
                keep_firing = False
                if inst.state == FIRING and rule.keep_firing_for > 0:
                    if inst.keep_firing_since is None:
                        inst.keep_firing_since = at
                        self._dirty = True
                    keep_firing = at - inst.keep_firing_since < rule.keep_firing_for
                if inst.state == PENDING or (
                    inst.resolved_at is not None and at - inst.resolved_at > RESOLVED_RETENTION
                ):
                    del active[labels]
                    self._dirty = True
                if inst.state != INACTIVE and not keep_firing:
                    was_firing = inst.state == FIRING
                    inst.state, inst.resolved_at = INACTIVE, at
                    if was_firing:
                        changed[labels] = inst
                if not keep_firing:
                    continue
            elif inst.keep_firing_since is not None:
                inst.keep_firing_since = None
                self._dirty = True
            if inst.state == PENDING and at - inst.active_since >= rule.for_:
                inst.state, inst.fired_at = FIRING, at
                changed[labels] = inst
        self._dirty |= bool(changed)
        return [_to_alert(rule.name, inst) for inst in changed.values()]

    def is_firing(self, alertname: str) -> bool:
        return any(i.state == FIRING for i in self._rules.get(alertname, {}).values())

    def alerts(self) -> list[Alert]:
        """Every pending, firing and recently resolved instance, as Prometheus reports them."""
        return [
            _to_alert(name, inst)
            for name, instances in sorted(self._rules.items())
            for inst in instances.values()
        ]

    def counts(self) -> dict[tuple[str, str], int]:
        """Instances per (alertname, state), every state present (0 when none)."""
        out = {}
        for name, instances in self._rules.items():
            for state in (PENDING, FIRING, "resolved"):
                out[name, state] = sum(1 for i in instances.values() if _state(i) == state)
        return out

    def retain(self, alertnames: set[str]) -> None:
        """Forget instances of rules that no longer exist (after a reload)."""
        for name in set(self._rules) - alertnames:
            del self._rules[name]
            self._dirty = True

    def save(self, at: float) -> None:
        """Write the state atomically when it changed: a crash leaves the old or the new file."""
        if self._path is None or not self._dirty:
            return
        doc = {
            "version": 1,
            "saved_at": at,
            "alerts": [
                {
                    "alertname": name,
                    "labels": dict(inst.labels),
                    "annotations": dict(inst.annotations),
                    "state": inst.state,
                    "active_since": inst.active_since,
                    "fired_at": inst.fired_at,
                    "resolved_at": inst.resolved_at,
                    "keep_firing_since": inst.keep_firing_since,
                }
                for name, instances in sorted(self._rules.items())
                for inst in instances.values()
            ],
        }
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self._path.parent, prefix=".alerts-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(doc, out, sort_keys=True)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self._path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._dirty = False

    def load(self, at: float) -> None:
        """Restore the saved state, unless it is missing, unreadable or older than the outage
        tolerance (then alerts start over, as after a long Prometheus outage)."""
        if self._path is None or not self._path.exists():
            return
        try:
            doc = json.loads(self._path.read_text(encoding="utf-8"))
            if at - float(doc["saved_at"]) > OUTAGE_TOLERANCE:
                log.info("alert state too old, starting over", path=str(self._path))
                return
            for item in doc["alerts"]:
                labels = label_set(item["labels"])
                self._rules.setdefault(item["alertname"], {})[labels] = _Instance(
                    labels,
                    label_set(item["annotations"]),
                    item["state"],
                    item["active_since"],
                    item["fired_at"],
                    item["resolved_at"],
                    item["keep_firing_since"],
                )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # Losing pending timers is safe (alerts re-arm); refusing to start is not.
            log.warning(
                "alert state unreadable, starting over", path=str(self._path), error=str(exc)
            )
            self._rules.clear()


def _state(inst: _Instance) -> str:
    return "resolved" if inst.state == INACTIVE else inst.state


def _to_alert(name: str, inst: _Instance) -> Alert:
    return Alert(
        name=name,
        labels=inst.labels,
        annotations=inst.annotations,
        state=_state(inst),
        active_since=inst.active_since,
        fired_at=inst.fired_at,
        resolved_at=inst.resolved_at,
        fingerprint=fingerprint(inst.labels),
    )

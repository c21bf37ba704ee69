"""Alertmanager's webhook notification (version 4), as the tests post it to srd."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any


def notification(alerts: Sequence[dict[str, Any]], group_key: str = "{}") -> bytes:
    """The body Alertmanager posts for one group of ``alerts``, with empty common labels."""
    return json.dumps(
        {
            "version": "4",
            "groupKey": group_key,
            "truncatedAlerts": 0,
            "status": "firing",
            "receiver": "srd",
            "groupLabels": {},
            "commonLabels": {},
            "commonAnnotations": {},
            "externalURL": "http://alertmanager:9093",
            "alerts": list(alerts),
        }
    ).encode()

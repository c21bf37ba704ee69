"""The docs say what the code does."""

from __future__ import annotations

import re
from pathlib import Path

from tests.support.metrics_doc import document

ROOT = Path(__file__).resolve().parents[2]


def test_the_metrics_reference_lists_every_metric_with_its_labels() -> None:
    text = (ROOT / "docs" / "metrics.md").read_text(encoding="utf-8")
    assert text == document(), "regenerate: python -m tests.support.metrics_doc > docs/metrics.md"


def test_every_local_link_in_the_docs_points_at_a_file_that_exists() -> None:
    for page in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]:
        for target in re.findall(r"\]\(([^)#]+)\)", page.read_text(encoding="utf-8")):
            if "://" in target:
                continue
            assert (page.parent / target).exists(), f"{page.name} links to missing {target}"

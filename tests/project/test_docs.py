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


ARCHITECTURE = ROOT / "docs" / "architecture.md"


def test_every_path_the_architecture_page_names_exists() -> None:
    text = ARCHITECTURE.read_text(encoding="utf-8")
    named = re.findall(r"`((?:srd|tests)/[\w/]+(?:\.py)?)`", text)
    assert named
    for path in named:
        assert (ROOT / path).exists(), f"architecture.md names missing {path}"


def modules_of(package: str) -> set[str]:
    """The names of the modules of ``srd.<package>``."""
    return {path.stem for path in (ROOT / "srd" / package).glob("*.py")}


def test_every_command_and_config_section_has_its_home_on_the_architecture_page() -> None:
    text = ARCHITECTURE.read_text(encoding="utf-8")
    commands = modules_of("cli") - {"__init__", "__main__", "exitcodes", "loading", "remote"}
    for command in sorted(commands):
        assert f"`{command}`" in text, f"srd {command} has no home in architecture.md"
    sections = modules_of("config") - {"__init__", "files", "types", "durations", "root"}
    for section in sorted(sections):
        assert f"`{section}`" in text, f"config section {section} missing in architecture.md"


def test_every_http_route_has_its_home_on_the_architecture_page() -> None:
    text = ARCHITECTURE.read_text(encoding="utf-8")
    routes = set()
    for module in (ROOT / "srd" / "http").glob("*.py"):
        source = module.read_text(encoding="utf-8")
        routes |= set(re.findall(r'(?:add_|routes\.)(?:get|post|put|delete)\("([^"{]+)', source))
    assert "/alertmanager" in routes
    for route in sorted(routes):
        home = re.search(rf"`(?:(?:GET|POST) )?{re.escape(route.rstrip('/'))}", text)
        assert home, f"route {route} has no home in architecture.md"

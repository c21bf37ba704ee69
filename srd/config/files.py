"""Every file srd reads, YAML to a validated model, with errors that name file, line and key.

``srd.yaml``, rule packs, runbooks and drills all load through here, so each reports its
problems alike: ``file:line: key.path: reason``, every problem at once, a likely key offered
for a misspelt one. Unknown keys are errors: a typo must never pass silently.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from srd.config.types import resolve, unread_parts

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class ConfigIssue:
    file: str
    key: str
    reason: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.key or '(top level)'}: {self.reason}"


class ConfigError(Exception):
    """The config cannot be used. ``issues`` lists every problem found, each with file and key."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(issue) for issue in issues))


def load_yaml_model(path: Path, model: type[M]) -> M:
    """Read ``path`` and validate it as ``model``; an unreadable file is a ConfigError too."""
    return parse_yaml_model(read_config_text(path), str(path), model)


def read_config_text(path: Path) -> str:
    """The UTF-8 text of a config file; ConfigError naming the file when it cannot be read."""
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([ConfigIssue(str(path), "", f"cannot read: {exc.strerror}")]) from None
    except UnicodeDecodeError as exc:
        reason = f"not UTF-8 text: byte {exc.object[exc.start]:#04x} at offset {exc.start}"
        raise ConfigError([ConfigIssue(str(path), "", reason)]) from None


def parse_yaml_model(text: str, filename: str, model: type[M]) -> M:
    """Validate YAML ``text`` as ``model`` and read what it names (secrets, CA files);
    ConfigError names file, line and key of each problem."""
    node, data = load_yaml(text, filename)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([ConfigIssue(filename, "", "the file must be a mapping of keys")])
    return validate_model(model, data, filename, node)


def validate_model(model: type[M], data: Any, filename: str, node: yaml.Node | None) -> M:
    """``data`` (read from ``node`` of ``filename``) validated as ``model`` and resolved;
    ConfigError names the line and key of each problem."""
    try:
        parsed = model.model_validate(data)
    except ValidationError as exc:
        issues = validation_issues(exc, filename, node, model)
        if unread := unread_parts(model, data):
            issues += validation_issues(unread, filename, node, model)
        raise ConfigError(issues) from None
    try:
        return resolve(parsed)
    except ValidationError as exc:
        raise ConfigError(validation_issues(exc, filename, node, model)) from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys: YAML keeps the last silently, hiding typos."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping",
                    node.start_mark,
                    f"duplicate key {key!r}",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def load_yaml(text: str, filename: str) -> tuple[yaml.Node | None, Any]:
    """Parse YAML refusing duplicate keys; returns the node tree (for line numbers) and data."""
    try:
        node = yaml.compose(text, Loader=_UniqueKeyLoader)
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError([_yaml_issue(filename, exc)]) from None
    return node, data


def _yaml_issue(filename: str, exc: yaml.YAMLError) -> ConfigIssue:
    """Where and why YAML refused the text: a syntax error, or a character YAML does not
    allow (a NUL byte, a control character), which the reader reports without a mark."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark
        line = mark.line + 1 if mark else None
        return ConfigIssue(filename, "", f"invalid YAML: {exc.problem or exc}", line)
    if isinstance(exc, yaml.reader.ReaderError):
        reason = f"invalid YAML: {exc.reason} {exc.character!r} at offset {exc.position}"
        return ConfigIssue(filename, "", reason)
    return ConfigIssue(filename, "", f"invalid YAML: {exc}")


def load_yaml_documents(text: str, filename: str) -> list[tuple[yaml.Node, Any]]:
    """Like ``load_yaml`` for a multi-document file (``---``, as OpenSLO files are written)."""
    try:
        nodes = list(yaml.compose_all(text, Loader=_UniqueKeyLoader))
        docs = list(yaml.load_all(text, Loader=_UniqueKeyLoader))
    except yaml.YAMLError as exc:
        raise ConfigError([_yaml_issue(filename, exc)]) from None
    return list(zip(nodes, docs, strict=True))


def child_node(node: yaml.Node | None, key: str) -> yaml.Node | None:
    """The value node of ``key`` in the mapping ``node``, for the lines of a nested document."""
    if isinstance(node, yaml.MappingNode):
        for key_node, value in node.value:
            if key_node.value == key:
                child: yaml.Node = value
                return child
    return None


def issue_at(filename: str, node: yaml.Node | None, loc: list[Any], reason: str) -> ConfigIssue:
    """A ConfigIssue for a problem found after validation, at the YAML line of ``loc``."""
    return ConfigIssue(filename, _key_path(loc), reason, _line_of(node, loc))


def validation_issues(
    exc: ValidationError, filename: str, node: yaml.Node | None, root: type[BaseModel]
) -> list[ConfigIssue]:
    """One ConfigIssue per pydantic error, with the YAML line of the key when known."""
    issues = []
    for error in exc.errors():
        loc = [part for part in error["loc"] if not _is_union_tag(part)]
        reason = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            reason = "unknown key" + _suggestion(root, loc)
        elif error["type"] == "missing":
            reason = "required key is missing"
        issues.append(ConfigIssue(filename, _key_path(loc), reason, _line_of(node, loc)))
    return issues


def _is_union_tag(part: object) -> bool:
    # pydantic puts the union member or validator name into loc; users never wrote those.
    return isinstance(part, str) and ("[" in part or part in {"function-after", "function-before"})


def _key_path(loc: list[Any]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _suggestion(root: type[BaseModel], loc: list[Any]) -> str:
    model: Any = root
    for part in loc[:-1]:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if isinstance(part, int):
            continue
        if field is None:
            return ""
        model = _model_in(field.annotation)
        if model is None:
            return ""
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _model_in(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _line_of(node: yaml.Node | None, loc: list[Any]) -> int | None:
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = [(k, v) for k, v in node.value if k.value == part]
            if not match:
                return line
            key_node, node = match[0]
            line = key_node.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return line
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line

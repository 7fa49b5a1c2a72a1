"""params.yaml as a file: read it with errors that point at the line or the key, and write values into it in place.

Overrides (`metadepth run -S`, `metadepth profile`, a run started from the Prefect UI) replace the text of the values
they name and nothing else, so every other byte of the file, comments, `null`s and layout included, stays as the
user wrote it. (A YAML round trip re-emits the whole file: it turns `null` into a blank and re-flows lists.)
The schema itself is tasks/params.py; nothing here knows it, except as the model `format_error` is given.
"""

from __future__ import annotations

import difflib
import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, get_args, get_origin

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.nodes import MappingNode, Node, SequenceNode

from tasks.io import MetadepthError


@contextmanager
def _yaml_errors(source: str, located: bool = True) -> Iterator[None]:
    """A YAML syntax error as one line with the file, line and column, as `dvc repro` gives it."""
    try:
        yield
    except Exception as err:  # ruamel's errors (and its duplicate-key warning-error) carry the position as a mark
        mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark and located else source
        problem = getattr(err, "problem", None) or getattr(err, "context", None) or str(err).splitlines()[0]
        raise MetadepthError(f"{where}: not valid YAML: {' '.join(problem.split())}") from None


def parse_yaml(text: str, source: str, located: bool = True) -> Any:
    """YAML text as plain data (dicts, lists, scalars); `located`: errors say where in `source` they are."""
    with _yaml_errors(source, located):
        return YAML(typ="safe", pure=True).load(text)  # pure: the YAML 1.2 rules DVC reads the file with


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise MetadepthError(f"{path}: params file not found; run from the project root or pass --params")
    return path.read_text()


def read_raw(path: Path) -> Any:
    """A params file (params.yaml, a profile) as plain data, before validation."""
    return parse_yaml(_read_text(path), str(path))


def _keys_at(schema: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The valid keys of the section at `loc` of `schema` (a dict-valued field's own keys are free names)."""
    node: Any = schema
    for part in loc:
        if isinstance(node, type) and issubclass(node, BaseModel) and part in node.model_fields:
            node = node.model_fields[part].annotation
        elif get_origin(node) is dict:
            node = get_args(node)[1]
        else:
            return []
    return list(node.model_fields) if isinstance(node, type) and issubclass(node, BaseModel) else []


def _did_you_mean(section: list[str], name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    if close:
        return f"did you mean {'.'.join([*section, close[0]])}?"
    return f"valid here: {', '.join(known)}" if known else "see params.yaml for the valid keys"


def format_error(err: ValidationError, source: str, schema: type[BaseModel] | None = None) -> str:
    """One line naming the dotted key. An unknown key is reported first, with the closest valid key of `schema`:
    a renamed or misspelt key would otherwise show up only as the "missing key" it left behind."""
    errors = err.errors()
    first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    key = ".".join(str(p) for p in first["loc"]) or "<root>"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        *section, name = (str(p) for p in first["loc"])
        known = _keys_at(schema, tuple(first["loc"][:-1])) if schema else []
        msg = f"unknown key; {_did_you_mean(section, name, known)}"
    elif first["type"] == "missing":
        msg = "missing key"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{source}: {key}: {msg}{more}"


def moved_key(raw: Any, moved: dict[str, str]) -> str | None:
    """The first dotted key of `moved` present in `raw` (an old name of a key), or None."""
    for old in moved:
        node = raw
        for part in old.split("."):
            node = node.get(part, moved) if isinstance(node, dict) else moved
        if node is not moved:
            return old
    return None


def parse_override(text: str) -> tuple[list[str], Any]:
    """`key.sub=value` with the value parsed as YAML, the same syntax as `dvc exp run -S`."""
    if "=" not in text:
        raise MetadepthError(f"override {text!r}: expected KEY=VALUE, e.g. finetune.steps=100")
    key, value = text.split("=", 1)
    if not key.strip():
        raise MetadepthError(f"override {text!r}: empty key")
    return key.strip().split("."), parse_yaml(value, f"override {text!r}", located=False) if value.strip() else None


def _flow(value: Any) -> str:
    """`value` as one line of YAML: `7`, `loft`, `null`, `[0, 1]`, `{crop: eigen}`."""
    y = YAML(typ="safe", pure=True)
    y.default_flow_style, y.width = True, 1 << 20
    y.representer.sort_base_mapping_type_on_output = False  # a mapping keeps the order it was given in
    buf = io.StringIO()
    y.dump(value, buf)
    text = buf.getvalue().removesuffix("\n...\n").rstrip("\n")
    return text if "\n" not in text else json.dumps(value)  # JSON is YAML too, and always one line


def _end(node: Node) -> int:
    """Where a value's own text ends: a block collection's last child, not the comments that follow it."""
    if isinstance(node, MappingNode | SequenceNode) and not node.flow_style and node.value:
        last = node.value[-1]
        return _end(last[1] if isinstance(node, MappingNode) else last)
    return node.end_mark.index


def _value_node(root: Node, keys: list[str], override: str) -> Node:
    node = root
    for depth, key in enumerate(keys):
        match = next((v for k, v in node.value if k.value == key), None) if isinstance(node, MappingNode) else None
        if match is None:
            known = [k.value for k, _ in node.value] if isinstance(node, MappingNode) else []
            raise MetadepthError(f"override {override!r}: unknown key {'.'.join(keys[: depth + 1])}; "
                                 + _did_you_mean(keys[:depth], key, known))
        node = match
    return node


def with_overrides(text: str, overrides: list[str], source: str) -> str:
    """`text` with each `key.sub=value` written over the value it names; every other byte unchanged."""
    for override in overrides:
        keys, value = parse_override(override)
        with _yaml_errors(source):
            root = YAML().compose(text)
        node = _value_node(root, keys, override)
        start = node.start_mark.index
        end = start + len(text[start:_end(node)].rstrip())
        new = _flow(value)
        text = text[:start] + (" " if text[start - 1:start] == ":" else "") + new + text[end:]
    return text


def overridden(path: Path, overrides: list[str]) -> tuple[str, Any]:
    """The params file's text with `overrides` written in, and that text as plain data (still to validate)."""
    text = with_overrides(_read_text(path), overrides, str(path))
    return text, parse_yaml(text, f"{path} with overrides")


def profile_overrides(profile: Path) -> list[str]:
    """A profile file (nested YAML of params keys) as `-S key=value` overrides, applied like any other."""
    if not profile.is_file():
        raise MetadepthError(f"{profile}: profile not found; profiles live in profiles/<name>.yaml")
    raw = read_raw(profile)

    def walk(node: Any, prefix: str) -> list[str]:
        if isinstance(node, dict):
            return [o for k, v in node.items() for o in walk(v, f"{prefix}{k}.")]
        return [f"{prefix[:-1]}={json.dumps(node)}"]

    return walk(raw or {}, "")

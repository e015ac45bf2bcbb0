"""Dotted `--set a.b=value` overrides applied to the raw YAML mapping before validation."""
from __future__ import annotations

import copy

from tasks.user_files import InputError, yaml_value


def parse_override(text: str) -> tuple[list[str], object]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"{text!r} is not of the form a.b.c=value")
    # YAML parsing gives `5` an int, `true` a bool and `[1, 2]` a list, like the file would.
    try:
        parsed = yaml_value(value) if value.strip() else ""
    except InputError as err:  # a ValueError: the spec's loader names the spec file before it
        raise InputError(f"{text}: {err}") from None
    return key.strip().split("."), parsed


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Return a copy of `raw` with each override set; list items are addressed by index."""
    out = copy.deepcopy(raw)
    for text in overrides:
        set_value(out, *parse_override(text))
    return out


def set_value(raw: dict, parts: list[str], value) -> None:
    """Set `value` at the dotted path `parts` of `raw`, in place, creating missing sections."""
    node = raw
    for depth, part in enumerate(parts[:-1]):
        node = _child(node, part, parts[: depth + 1], create=True)
    _assign(node, parts[-1], value, parts)


def _child(node, part: str, where: list[str], create: bool):
    if isinstance(node, list):
        return node[_index(node, part, where)]
    if not isinstance(node, dict):
        raise ValueError(f"{'.'.join(where[:-1])} is a value, not a section")
    if part not in node or node[part] is None:
        if not create:
            raise ValueError(f"no field {'.'.join(where)}")
        node[part] = {}
    return node[part]


def _assign(node, part: str, value, where: list[str]) -> None:
    if isinstance(node, list):
        node[_index(node, part, where)] = value
    elif isinstance(node, dict):
        node[part] = value
    else:
        raise ValueError(f"{'.'.join(where[:-1])} is a value, not a section")


def _index(node: list, part: str, where: list[str]) -> int:
    if not part.lstrip("-").isdigit() or not -len(node) <= int(part) < len(node):
        raise ValueError(f"{'.'.join(where)}: list index must be 0..{len(node) - 1}")
    return int(part)


def deep_merge(base: dict, over: dict) -> dict:
    """`base` with `over` on top, nested mappings merged key by key (a model's train overrides)."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out

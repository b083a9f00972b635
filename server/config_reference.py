"""The configuration reference (docs/configuration.md), rendered from the settings model.

Pure: `render_reference()` walks the sections of `Settings` (every field: key, type, default,
environment variable, description) and the keys of the array-of-tables values the DHCP parsers
take ([[dhcp.subnets]], [[dhcp.profiles]] and their options, [[dhcp.links]]), and returns
Markdown. `imprint config-reference > docs/configuration.md` writes it; a test fails when the
committed file differs from what the model renders, so the reference cannot fall behind.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from server.config import DhcpLink, Settings
from server.dhcp.pool import SUBNET_KEY_DOCS, Subnet
from server.dhcp.profiles import OPTION_KEY_DOCS, PROFILE_KEY_DOCS, VendorProfile

ENV_PREFIX = "IMPRINT_"
# Settings fields that are no key of the file (load_settings fills them in).
INTERNAL_FIELDS = frozenset({"config_file"})
REGENERATE = "imprint config-reference > docs/configuration.md"


def sections() -> list[tuple[str, type[BaseModel]]]:
    """Every `[section]` of the file and its model, in the model's order."""
    out: list[tuple[str, type[BaseModel]]] = []
    for name, field in Settings.model_fields.items():
        if name in INTERNAL_FIELDS:
            continue
        model = field.annotation
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise TypeError(f"Settings.{name} is not a section model")
        out.append((name, model))
    return out


def env_name(section: str, key: str) -> str:
    """The environment variable that overrides `[section] key` (pydantic-settings' nesting)."""
    return f"{ENV_PREFIX}{section.upper()}__{key.upper()}"


def every_key() -> Iterator[tuple[str, FieldInfo]]:
    """(dotted key, field) of every field of every section, [[dhcp.links]] included."""
    for section, model in sections():
        for key, field in model.model_fields.items():
            yield f"{section}.{key}", field
    for key, field in DhcpLink.model_fields.items():
        yield f"dhcp.links.{key}", field


def _base_type(annotation: Any) -> str:
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin in (Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        return " or ".join(_base_type(a) for a in rest)
    if origin is Literal:
        return " | ".join(f'"{a}"' for a in args)
    if origin is tuple and args and args[0] in (Subnet, VendorProfile):
        return "array of tables"
    if origin is list:
        inner = args[0] if args else Any
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            return "array of tables"
        return f"list of {_base_type(inner)}s"
    if origin is dict:
        return f"table of {_base_type(args[0])} = {_base_type(args[1])}"
    names = {bool: "boolean", int: "integer", float: "number", str: "string", Path: "path"}
    if annotation in names:
        return names[annotation]
    return str(annotation)


def _number(n: Any) -> str:
    return f"{n:_}" if isinstance(n, int) and abs(n) >= 100_000 else str(n)


def _bounds(field: FieldInfo) -> str:
    lo = hi = ""
    for m in field.metadata:
        if isinstance(m, annotated_types.Ge):
            lo = _number(m.ge)
        elif isinstance(m, annotated_types.Gt):
            lo = f"more than {_number(m.gt)}"
        elif isinstance(m, annotated_types.Le):
            hi = _number(m.le)
        elif isinstance(m, annotated_types.Lt):
            hi = f"less than {_number(m.lt)}"
    if lo and hi and not lo.startswith("more"):
        return f"{lo} to {hi}"
    if lo and hi:
        return f"{lo}, at most {hi}"
    if lo:
        return lo if lo.startswith("more") else f"at least {lo}"
    if hi:
        return f"at most {hi}"
    return ""


def field_type(field: FieldInfo) -> str:
    """The field's type as the operator writes it, with its bounds (e.g. "integer, 0 to 65535")."""
    bounds = _bounds(field)
    return _base_type(field.annotation) + (f", {bounds}" if bounds else "")


def toml_value(value: Any) -> str:
    """A default as it is written in the file; "unset" for None."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return _number(value) if isinstance(value, int) else repr(value)
    if isinstance(value, str | Path):
        return f'"{value}"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f'"{k}" = {toml_value(v)}' for k, v in value.items()) + "}"
    return repr(value)


def field_default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        return toml_value(field.default_factory())  # type: ignore[call-arg]
    if field.default is PydanticUndefined:
        return "required"
    return toml_value(field.default)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _table(rows: list[tuple[str, ...]], headers: tuple[str, ...]) -> list[str]:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return out


def _doc(model: type[BaseModel]) -> str:
    doc = model.__doc__
    if not doc or model.__doc__ == BaseModel.__doc__:
        return ""
    return " ".join(inspect.cleandoc(doc).split())


def _field_rows(section: str, model: type[BaseModel], *, env: bool) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for key, field in model.model_fields.items():
        rows.append(
            (
                f"`{key}`",
                field_type(field),
                _code(field_default(field)),
                f"`{env_name(section, key)}`" if env else "(in `IMPRINT_DHCP__LINKS`)",
                field.description or "",
            )
        )
    return rows


def _code(default: str) -> str:
    """A default as written in the file is code; "unset", "required" are words."""
    return default if default in ("unset", "required", "none") or " " in default else f"`{default}`"


def _key_rows(docs: Mapping[str, tuple[str, str, str]]) -> list[tuple[str, ...]]:
    return [(f"`{k}`", kind, _code(d), m) for k, (kind, d, m) in docs.items()]


FIELD_HEADERS = ("key", "type", "default", "environment", "meaning")
KEY_HEADERS = ("key", "type", "default", "meaning")


def render_reference() -> str:
    """docs/configuration.md: every section and key of the configuration, as Markdown."""
    out = [
        "# Configuration reference",
        "",
        "<!-- Generated from server/config.py: do not edit; run",
        f"     {REGENERATE} -->",
        "",
        "One TOML file (`--config FILE` on every `imprint` command) plus environment variables "
        "`IMPRINT_<SECTION>__<KEY>`, which win over the file (e.g. `IMPRINT_HTTP__PORT=9443`). "
        "A list or table value in the environment is written as JSON, e.g. "
        '`IMPRINT_MDNS__INTERFACES=\'["eth0.100", "eth0.200"]\'`. Relative paths in the file '
        "are relative to the file's folder. `imprint check-config --config FILE` checks a file "
        "(and that its interfaces and listen addresses exist on this host) without starting; "
        "`--profiles` also shows the DHCP options each vendor profile sends. An unknown key is "
        "refused with its name. A commented example of every section: "
        "[`configs/lab.toml`](../configs/lab.toml).",
        "",
        "Sections: " + ", ".join(f"[`[{name}]`](#{name})" for name, _ in sections()) + ".",
    ]
    for name, model in sections():
        out += ["", f"## [{name}]", ""]
        doc = _doc(model)
        if doc:
            out += [doc, ""]
        out += _table(_field_rows(name, model, env=True), FIELD_HEADERS)
        if name == "dhcp":
            out += _dhcp_tables()
    out.append("")
    return "\n".join(out)


def _dhcp_tables() -> list[str]:
    out = [
        "",
        "### [[dhcp.subnets]]",
        "",
        "One table per subnet full mode leases from; subnets may not overlap. Also the keys of "
        "`[[dhcp.links.subnets]]`.",
        "",
    ]
    out += _table(_key_rows(SUBNET_KEY_DOCS), KEY_HEADERS)
    out += [
        "",
        "### [[dhcp.profiles]]",
        "",
        "Vendor profiles: the first whose match fits a client gives the options it is sent; "
        "these are tried before the built-in ones (`builtin_profiles`). "
        "`imprint check-config --profiles` shows every profile's options as sent.",
        "",
    ]
    out += _table(_key_rows(PROFILE_KEY_DOCS), KEY_HEADERS)
    out += ["", "Each entry of `options` (`[[dhcp.profiles.options]]`):", ""]
    out += _table(_key_rows(OPTION_KEY_DOCS), KEY_HEADERS)
    out += [
        "",
        "### [[dhcp.links]]",
        "",
        _doc(DhcpLink) + " With links, the `[dhcp]` keys `interface`, `mode`, `server_ip` and "
        "`subnets` are given per link instead; the other `[dhcp]` keys apply to every link.",
        "",
    ]
    out += _table(_field_rows("dhcp", DhcpLink, env=False), FIELD_HEADERS)
    return out

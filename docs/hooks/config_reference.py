"""MkDocs hook: render every section and key of the run configuration from igkd's pydantic models.

The page ``configuration.md`` holds the marker ``<!-- config-reference -->``; at build time it is replaced by one table per
section (type, default, constraints and description of every field), read from :class:`igkd.config.RunConfig`, so the
reference cannot drift from the code.
"""

from __future__ import annotations

import types
import typing
from pathlib import PurePath
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

MARKER = "<!-- config-reference -->"


def _type_text(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f"`{value}`" for value in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(_type_text(arg) for arg in typing.get_args(annotation))
    if origin is typing.Annotated:
        return _type_text(typing.get_args(annotation)[0])
    if origin in (list, tuple, dict):
        args = ", ".join(_type_text(arg).strip("`") for arg in typing.get_args(annotation) if arg is not Ellipsis)
        return f"`{origin.__name__}[{args}]`"
    if annotation is type(None):
        return "`null`"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return f"[`{annotation.__name__}`](#{annotation.__name__.lower()})"
    if isinstance(annotation, type):
        return f"`{annotation.__name__}`"
    return f"`{annotation}`"


def _default_text(field: FieldInfo) -> str:
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if isinstance(value, BaseModel):
        return "(section defaults)"
    if value is None:
        return "`null`"
    text = str(value) if isinstance(value, (str, PurePath)) else repr(value)
    return f"`{text}`"


def _constraints(field: FieldInfo) -> str:
    parts = []
    for item in field.metadata:
        for name, symbol in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"), ("pattern", "matches")):
            value = getattr(item, name, None)
            if value is not None:
                parts.append(f"{symbol} `{value}`")
    return ", ".join(parts)


def _nested_models(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _nested_models(arg)]


def render(root: type[BaseModel]) -> str:
    """Markdown tables for ``root`` and every model nested in it, in order of first appearance."""
    sections: list[tuple[str, type[BaseModel]]] = [("top level", root)]
    seen = {root}
    out: list[str] = []
    index = 0
    while index < len(sections):
        path, model = sections[index]
        index += 1
        doc = (model.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
        out += [f"### {model.__name__}", "", f"`{path}`" + (f": {doc}" if doc else ""), ""]
        out += ["| key | type | default | constraints | description |", "|---|---|---|---|---|"]
        for name, field in model.model_fields.items():
            description = (field.description or "").replace("|", "\\|")
            out.append(f"| `{name}` | {_type_text(field.annotation)} | {_default_text(field)} | {_constraints(field)} | {description} |")
            for nested in _nested_models(field.annotation):
                if nested not in seen:
                    seen.add(nested)
                    prefix = "" if path == "top level" else f"{path}."
                    sections.append((f"{prefix}{name}", nested))
        out.append("")
    return "\n".join(out)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if MARKER not in markdown:
        return markdown
    from igkd.config import RunConfig

    return markdown.replace(MARKER, render(RunConfig))

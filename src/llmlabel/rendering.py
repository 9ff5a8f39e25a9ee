"""What a voter sees of an item: the project's ``item_template`` rendered over its fields.

Rendered in Jinja2's sandbox: the template is the project's, but the fields are whatever
was imported, so nothing in them may reach Python attributes.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateError, nodes
from jinja2.sandbox import SandboxedEnvironment

from llmlabel.errors import ConfigError, InputError

_ENV = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)


@lru_cache(maxsize=64)
def _compiled(template: str) -> Any:
    try:
        return _ENV.from_string(template)
    except TemplateError as exc:
        raise ConfigError(f"item_template is not a valid Jinja2 template: {exc}") from None


@lru_cache(maxsize=64)
def text_around_name(template: str) -> tuple[str, str, str] | None:
    """A template that is plain text around one bare ``{{ name }}`` (the default item template,
    the default prompt) as (before, name, after); None for any other (filters, conditions, two
    names). Filling it is concatenation, which is what Jinja2 renders without the ~0.1 ms of a
    render context: most of an LLM call's overhead in llmlabel."""
    try:
        body = _ENV.parse(template).body
    except TemplateError:
        return None  # rendering reports it
    if len(body) != 1 or not isinstance(body[0], nodes.Output):
        return None
    parts = body[0].nodes
    names = [i for i, n in enumerate(parts) if isinstance(n, nodes.Name)]
    if len(names) != 1 or not all(isinstance(n, nodes.TemplateData) for i, n in enumerate(parts) if i != names[0]):
        return None
    text = [n.data if isinstance(n, nodes.TemplateData) else "" for n in parts]
    return "".join(text[:names[0]]), parts[names[0]].name, "".join(text[names[0] + 1:])  # type: ignore[attr-defined]


def render_item(template: str, fields: Mapping[str, Any], *, strip: bool = True) -> str:
    """``strip=False`` keeps surrounding whitespace (what LLM prompts were hashed with)."""
    frame = text_around_name(template)
    if frame is not None and fields.get(frame[1]) is not None:
        text = frame[0] + str(fields[frame[1]]) + frame[2]
        return text.strip() if strip else text
    try:
        text = str(_compiled(template).render(**fields))
    except TemplateError as exc:
        raise InputError(f"cannot render the item with item_template: {exc} (item fields: {', '.join(fields)})") from None
    return text.strip() if strip else text

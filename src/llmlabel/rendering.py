"""What a voter sees of an item: the project's ``item_template`` rendered over its fields.

Rendered in Jinja2's sandbox: the template is the project's, but the fields are whatever
was imported, so nothing in them may reach Python attributes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from llmlabel.errors import ConfigError, InputError

_ENV = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)


@lru_cache(maxsize=64)
def _compiled(template: str) -> Any:
    try:
        return _ENV.from_string(template)
    except TemplateError as exc:
        raise ConfigError(f"item_template is not a valid Jinja2 template: {exc}") from None


_ONE_FIELD = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


@lru_cache(maxsize=64)
def _single_field(template: str) -> str | None:
    """The field a template made of one ``{{ field }}`` shows (the default), else None."""
    m = _ONE_FIELD.fullmatch(template)
    return m.group(1) if m else None


def render_item(template: str, fields: Mapping[str, Any], *, strip: bool = True) -> str:
    """``strip=False`` keeps surrounding whitespace (what LLM prompts were hashed with)."""
    name = _single_field(template)
    if name is not None and name in fields and fields[name] is not None:
        # the default template, rendered directly: the sandbox costs ~0.1 ms an item, which is
        # most of an LLM call's overhead in llmlabel; the result is what Jinja2 renders
        text = str(fields[name])
        return text.strip() if strip else text
    try:
        text = str(_compiled(template).render(**fields))
    except TemplateError as exc:
        raise InputError(f"cannot render the item with item_template: {exc} (item fields: {', '.join(fields)})") from None
    return text.strip() if strip else text

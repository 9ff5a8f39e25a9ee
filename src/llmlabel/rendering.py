"""What a voter sees of an item: the project's ``item_template`` rendered over its fields.

Rendered in Jinja2's sandbox: the template is the project's, but the fields are whatever
was imported, so nothing in them may reach Python attributes.
"""

from __future__ import annotations

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


def render_item(template: str, fields: dict[str, Any]) -> str:
    try:
        return str(_compiled(template).render(**fields)).strip()
    except TemplateError as exc:
        raise InputError(f"cannot render the item with item_template: {exc} (item fields: {', '.join(fields)})") from None

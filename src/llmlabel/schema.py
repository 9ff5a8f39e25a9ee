"""Label schemas: what a valid label is, in one canonical JSON-able form per schema type.

Every label that enters llmlabel (an imported gold label, a human vote, an LLM answer, an
adjudication) passes through ``LabelSchema.validate`` so storage, consensus and export only
ever see canonical values:

- ``single``: the class name (``"positive"``);
- ``multi``: the sorted list of class names that apply (``["billing", "refund"]``, maybe empty);
- ``taxonomy``: a node path joined by the separator (``"Electronics/Phones"``); a path that
  stops above the leaves is a coarse label, which consensus reads as evidence for every leaf
  below it;
- ``options``: the 0-based index of the chosen option among those the item carries.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from llmlabel.errors import LabelError

Label = str | list[str] | int


class LabelDef(BaseModel):
    """One class: the definition and examples go into prompts and the annotator's page."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    definition: str = ""
    examples: list[str] = Field(default_factory=list)


def _label_defs(value: Any) -> Any:
    """Accept classes as a list of names, a list of LabelDefs, or a mapping name → definition."""
    if isinstance(value, Mapping):
        out = []
        for name, spec in value.items():
            if spec is None:
                out.append({"name": str(name)})
            elif isinstance(spec, str):
                out.append({"name": str(name), "definition": spec})
            elif isinstance(spec, Mapping):
                out.append({"name": str(name), **spec})
            else:
                raise ValueError(
                    f"class {name!r}: expected a definition string or a mapping with "
                    "'definition' and 'examples', got " + type(spec).__name__
                )
        return out
    if isinstance(value, list):
        return [{"name": v} if isinstance(v, str) else v for v in value]
    return value


def _suggest(value: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(value, choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _list_choices(choices: Sequence[str], limit: int = 12) -> str:
    shown = ", ".join(choices[:limit])
    return shown + (f", … ({len(choices)} in all)" if len(choices) > limit else "")


class _ClassSchema(BaseModel):
    model_config = ConfigDict(extra="forbid")

    classes: list[LabelDef] = Field(min_length=2)

    @field_validator("classes", mode="before")
    @classmethod
    def _normalize(cls, value: Any) -> Any:
        return _label_defs(value)

    @field_validator("classes")
    @classmethod
    def _unique(cls, classes: list[LabelDef]) -> list[LabelDef]:
        seen: set[str] = set()
        for c in classes:
            if c.name in seen:
                raise ValueError(f"class {c.name!r} is listed twice")
            seen.add(c.name)
        return classes

    @cached_property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]

    def _check_class(self, value: Any, where: str) -> str:
        if not isinstance(value, str):
            raise LabelError(f"label {value!r} must be a class name (a string){where}")
        value = value.strip()
        if value not in self.class_names:
            raise LabelError(
                f"label {value!r} is not one of: {_list_choices(self.class_names)}"
                f"{_suggest(value, self.class_names)}{where}"
            )
        return value


class SingleChoice(_ClassSchema):
    type: Literal["single"] = "single"

    def validate_label(self, value: Any, item: Mapping[str, Any] | None = None, where: str = "") -> str:
        return self._check_class(value, where)


class MultiLabel(_ClassSchema):
    type: Literal["multi"]

    def validate_label(
        self, value: Any, item: Mapping[str, Any] | None = None, where: str = ""
    ) -> list[str]:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    value = json.loads(text)
                except json.JSONDecodeError as exc:
                    raise LabelError(f"multi-label value {value!r} is not a JSON list{where}") from exc
            else:
                value = [v for v in (p.strip() for p in text.split("|")) if v]
        if not isinstance(value, list):
            raise LabelError(
                f"a multi-label value must be a list of class names (or 'a|b' in CSV), got {value!r}{where}"
            )
        return sorted({self._check_class(v, where) for v in value})


def _walk_tree(tree: Mapping[str, Any], prefix: tuple[str, ...], out: list[tuple[str, ...]]) -> None:
    for name, children in tree.items():
        path = (*prefix, str(name))
        out.append(path)
        if isinstance(children, Mapping):
            _walk_tree(children, path, out)
        elif isinstance(children, list):
            for leaf in children:
                if isinstance(leaf, Mapping):
                    _walk_tree(leaf, path, out)
                else:
                    out.append((*path, str(leaf)))
        elif children is not None:
            raise ValueError(
                f"taxonomy node {'/'.join(path)!r}: children must be a mapping, a list or empty, "
                f"got {type(children).__name__}"
            )


class Taxonomy(BaseModel):
    """A tree of any depth, given as a nested mapping (``tree``) or as a list of ``paths``."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["taxonomy"]
    tree: dict[str, Any] | None = None
    paths: list[str] | None = None
    separator: str = Field(default="/", min_length=1)
    definitions: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_source(self) -> Taxonomy:
        if (self.tree is None) == (self.paths is None):
            raise ValueError("give the taxonomy as exactly one of 'tree' (nested mapping) or 'paths'")
        if len(self.leaves) < 2:
            raise ValueError("a taxonomy needs at least two leaves")
        for key in self.definitions:
            if key not in self._index:
                raise ValueError(f"definitions: {key!r} is not a node of the taxonomy")
        return self

    @cached_property
    def node_paths(self) -> list[str]:
        """Every node, parents before children, as separator-joined paths."""
        raw: list[tuple[str, ...]] = []
        if self.tree is not None:
            _walk_tree(self.tree, (), raw)
        else:
            for p in self.paths or []:
                parts = tuple(s.strip() for s in p.split(self.separator))
                if any(not s for s in parts):
                    raise ValueError(f"taxonomy path {p!r} has an empty segment")
                for depth in range(1, len(parts) + 1):
                    raw.append(parts[:depth])
        seen: dict[str, None] = {}
        for parts in raw:
            for part in parts:
                if self.separator in part:
                    raise ValueError(f"taxonomy node name {part!r} contains the separator {self.separator!r}")
            seen.setdefault(self.separator.join(parts), None)
        return list(seen)

    @cached_property
    def _index(self) -> dict[str, int]:
        return {p: i for i, p in enumerate(self.node_paths)}

    @cached_property
    def leaves(self) -> list[str]:
        parents = {p.rsplit(self.separator, 1)[0] for p in self.node_paths if self.separator in p}
        return [p for p in self.node_paths if p not in parents]

    @cached_property
    def depth(self) -> int:
        return max(p.count(self.separator) + 1 for p in self.node_paths)

    def level_of(self, path: str) -> int:
        """1 for a top-level node."""
        return path.count(self.separator) + 1

    @property
    def class_names(self) -> list[str]:
        return self.leaves

    def validate_label(self, value: Any, item: Mapping[str, Any] | None = None, where: str = "") -> str:
        if isinstance(value, list):
            value = self.separator.join(str(v) for v in value)
        if not isinstance(value, str):
            raise LabelError(f"taxonomy label {value!r} must be a path like 'a{self.separator}b'{where}")
        path = self.separator.join(s.strip() for s in value.strip().split(self.separator))
        if path not in self._index:
            raise LabelError(
                f"taxonomy label {value!r} is not a node of the taxonomy"
                f"{_suggest(path, self.node_paths)}{where}"
            )
        return path


class Options(BaseModel):
    """A choice among options each item carries (best of N continuations, pairwise preference)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["options"]
    field: str = Field(default="options", min_length=1)
    min_options: int = Field(default=2, ge=2)

    def options_of(self, item: Mapping[str, Any], where: str = "") -> list[Any]:
        opts = item.get(self.field)
        if isinstance(opts, str):
            try:
                opts = json.loads(opts)
            except json.JSONDecodeError as exc:
                raise LabelError(f"item field {self.field!r} must be a JSON list of options{where}") from exc
        if not isinstance(opts, list) or len(opts) < self.min_options:
            raise LabelError(
                f"item field {self.field!r} must hold a list of at least {self.min_options} options{where}"
            )
        return opts

    def validate_label(self, value: Any, item: Mapping[str, Any] | None = None, where: str = "") -> int:
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value.strip())
        if isinstance(value, bool) or not isinstance(value, int):
            raise LabelError(f"an options label must be the 0-based index of the chosen option, got {value!r}{where}")
        if item is not None:
            n = len(self.options_of(item, where))
            if not 0 <= value < n:
                raise LabelError(f"option index {value} is out of range: the item has {n} options{where}")
        elif value < 0:
            raise LabelError(f"option index {value} is negative{where}")
        return value


LabelSchema = Annotated[SingleChoice | MultiLabel | Taxonomy | Options, Field(discriminator="type")]


def canonical_json(label: Label) -> str:
    """A stable text form of a canonical label, for hashing and equality in SQL."""
    return json.dumps(label, ensure_ascii=False, sort_keys=True, separators=(",", ":"))

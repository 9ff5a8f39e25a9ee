"""Prompts: Jinja2 template files, rendered per item, versioned by a hash of what shapes them.

Templates live in the top-level ``prompts/`` folder (``<name>.system.j2``, ``<name>.user.j2``).
They are found in a ``prompts/`` folder beside the project file first (so a project can carry its
own), then in the installed package (a wheel force-includes them as ``llmlabel/_prompts``),
then in the repository (an editable install).

The item is fenced in ``<item>…</item>`` and a fence inside the item's text is defused, so
the item cannot close its own fence and speak as the instructions. Few-shot examples come from
gold of the ``dev`` split only (``test`` gold stays unseen, for evaluation), and never the
item's own gold.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from jinja2 import Environment, FileSystemLoader, StrictUndefined, TemplateNotFound

from llmlabel.config import LabelerConfig, ProjectConfig
from llmlabel.errors import ConfigError
from llmlabel.labelers.output import LabelSchema, json_schema, label_field
from llmlabel.rendering import render_item, text_around_name
from llmlabel.schema import Options, Taxonomy

_PACKAGE_DIR = Path(__file__).resolve().parents[1]
_WORD = re.compile(r"\w+")

_TASKS = {
    "single": ("Choose exactly one label.", "one of the labels, spelled exactly as listed"),
    "multi": ("Choose every label that applies; the list may be empty.", "a list of the labels that apply"),
    "taxonomy": ("Choose the most specific category: a full path from the top of the taxonomy to a leaf.",
                 "one full category path, spelled exactly as listed"),
    "options": ("The item lists numbered options; choose the best one.", "the number of the best option (0-based)"),
}


def template_dirs(project_dir: Path | None = None) -> list[Path]:
    dirs = [project_dir / "prompts"] if project_dir else []
    dirs += [_PACKAGE_DIR / "_prompts", _PACKAGE_DIR.parents[1] / "prompts"]
    return [d for d in dirs if d.is_dir()]


def defuse(text: str) -> str:
    """Keep item text from closing or opening its fence."""
    return re.sub(r"<(/?)item>", r"[\1item]", text, flags=re.IGNORECASE)


@dataclass
class Example:
    text: str
    answer: str


class Prompter:
    """Renders one labeler's messages for an item; ``version`` identifies the prompt."""

    def __init__(self, config: ProjectConfig, labeler: LabelerConfig, project_dir: Path | None = None) -> None:
        self.config = config
        self.labeler = labeler
        self.schema: LabelSchema = config.labels
        self.verbalized = labeler.confidence == "verbalized"
        dirs = template_dirs(project_dir)
        env = Environment(loader=FileSystemLoader(dirs), undefined=StrictUndefined, keep_trailing_newline=False,
                          autoescape=False)
        try:
            self.system = env.get_template(f"{labeler.prompt}.system.j2")
            self.user = env.get_template(f"{labeler.prompt}.user.j2")
        except TemplateNotFound as exc:
            raise ConfigError(
                f"labeler {labeler.name!r}: prompt template {exc.name!r} not found in "
                f"{', '.join(map(str, dirs)) or '(no prompts folder)'}"
            ) from None
        sources = [Path(t.filename).read_text(encoding="utf-8") for t in (self.system, self.user) if t.filename]
        self._systems: dict[str, str] = {}
        frame = text_around_name(sources[1]) if len(sources) == 2 else None
        self._user_frame = (frame[0], frame[2]) if frame is not None and frame[1] == "item" else None
        self._fixed_schema = not isinstance(self.schema, Options)  # the same answer schema for every item
        self.item_template = config.item_template
        self.version = _digest({
            "templates": sources,
            "item_template": config.item_template,
            "instructions": config.instructions.model_dump(),
            "labels": config.labels.model_dump(mode="json"),
            "params": {k: v for k, v in labeler.params.items() if k not in ("api_base", "api_key")},
            "confidence": labeler.confidence,
            "samples": labeler.samples,
            "few_shot": labeler.few_shot.model_dump(),
        })

    def item_text(self, fields: Mapping[str, Any]) -> str:
        text = render_item(self.item_template, fields, strip=False)
        if isinstance(self.schema, Options):
            opts = self.schema.options_of(fields)
            text += "\n\nOptions:\n" + "\n".join(f"[{i}] {o}" for i, o in enumerate(opts))
        return defuse(text)

    def _classes(self) -> list[dict[str, Any]]:
        s = self.schema
        if isinstance(s, Taxonomy):
            return [{"name": leaf, "definition": s.definitions.get(leaf, ""), "examples": []} for leaf in s.leaves]
        if isinstance(s, Options):
            return []
        return [c.model_dump() for c in s.classes]

    def messages(self, fields: Mapping[str, Any], examples: Sequence[Example] = ()) -> list[dict[str, str]]:
        system = self._system(fields, examples)
        item = self.item_text(fields)
        if self._user_frame is not None:  # what Jinja2 would render, without a context per item
            before, after = self._user_frame
            user = before + item + after
        else:
            user = self.user.render(item=item, fields=fields)
        return [{"role": "system", "content": system}, {"role": "user", "content": user.strip()}]

    def _system(self, fields: Mapping[str, Any], examples: Sequence[Example]) -> str:
        """The same for most items: rendered once (Jinja contexts are not free), and looked up
        without serializing the answer schema when it is the same for every item."""
        fixed = self._fixed_schema and not examples
        schema = None if fixed else json_schema(self.schema, fields, verbalized=self.verbalized)
        key = "" if fixed else json.dumps([schema, [(e.text, e.answer) for e in examples]], ensure_ascii=False)
        system = self._systems.get(key)
        if system is None:
            schema = schema or json_schema(self.schema, fields, verbalized=self.verbalized)
            task, help_ = _TASKS[self.schema.type]
            system = self.system.render(
                project=self.config.name, description=self.config.description,
                guidelines=self.config.instructions.guidelines, classes=self._classes(), task=task,
                field=label_field(self.schema), field_help=help_, verbalized=self.verbalized,
                schema_json=json.dumps(schema, ensure_ascii=False), examples=list(examples),
            ).strip()
            if len(self._systems) < 1024:
                self._systems[key] = system
        return system

    def example(self, fields: Mapping[str, Any], label: Any) -> Example:
        answer = json.dumps({label_field(self.schema): label}, ensure_ascii=False)
        return Example(text=self.item_text(fields), answer=answer)


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()[:16]


class FewShot:
    """Examples drawn from gold: the first ``count`` (fixed) or the most similar (TF-IDF cosine)."""

    def __init__(self, prompter: Prompter, gold: Sequence[tuple[int, Mapping[str, Any], Any]]) -> None:
        cfg = prompter.labeler.few_shot
        self.count, self.strategy = cfg.count, cfg.strategy
        self.item_ids = [g[0] for g in gold]
        self.examples = [prompter.example(fields, label) for _, fields, label in gold]
        if self.count and self.strategy == "similar" and self.examples:
            docs = [Counter(_WORD.findall(e.text.lower())) for e in self.examples]
            vocab = sorted({w for d in docs for w in d})
            self.index = {w: i for i, w in enumerate(vocab)}
            df = np.zeros(len(vocab))
            for d in docs:
                df[[self.index[w] for w in d]] += 1
            self.idf = np.log((1 + len(docs)) / (1 + df)) + 1.0
            self.matrix = np.array([self._vector(d) for d in docs]) if vocab else np.zeros((len(docs), 0))

    def _vector(self, counts: Mapping[str, int]) -> np.ndarray:
        v = np.zeros(len(self.index))
        for w, c in counts.items():
            j = self.index.get(w)
            if j is not None:
                v[j] = c * self.idf[j]
        norm = np.linalg.norm(v)
        return v / norm if norm else v

    def pick(self, item_id: int, text: str) -> list[Example]:
        if not self.count or not self.examples:
            return []
        allowed = [i for i, gid in enumerate(self.item_ids) if gid != item_id]
        if self.strategy == "similar":
            scores = self.matrix @ self._vector(Counter(_WORD.findall(text.lower())))
            allowed.sort(key=lambda i: (-scores[i], i))
        return [self.examples[i] for i in allowed[: self.count]]


"""Benchmark mining: items the project already knows well become new gold.

Gold is what keeps voters honest and calibration measured, and it runs out. Items finalized at
a very high posterior, backed by several *trusted* voters (not gated, gold accuracy whose lower
bound clears the project's bar) and opposed by none of them, are as close to gold as consensus
gets; they become candidates.

Not every candidate is worth the same: an item whose label a lazy strategy would also get right
(always the majority class; for per-item options, always the first or the longest option)
cannot tell a careful annotator from a lazy one. Candidates are weighted up by the share of
applicable lazy heuristics that would be wrong on them (weight 1 to 2), and listed with the
most discriminating first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlmodel import Session, col, select

from llmlabel.config import ProjectConfig
from llmlabel.quality.dataset import ProjectData, load_project
from llmlabel.quality.gating import wilson_lower_bound
from llmlabel.schema import Options
from llmlabel.store.tables import Gold, Item, Project
from llmlabel.votes import mark_gold_answers

MINABLE = ("consensus", "auto")


def lazy_heuristics(label: Any, *, majority: Any, options: list[Any] | None = None) -> dict[str, bool]:
    """Which lazy strategies would get this label wrong (True = wrong, i.e. the item catches it)."""
    out = {"majority_class": label != majority}
    if options is not None:
        lengths = [len(str(o)) for o in options]
        out["first_option"] = label != 0
        out["longest_option"] = label != int(np.argmax(lengths))
    return out


def heuristic_weight(wrong: dict[str, bool]) -> float:
    return 1.0 + (sum(wrong.values()) / len(wrong) if wrong else 0.0)


@dataclass
class Candidate:
    item_id: int
    external_id: str
    label: Any
    confidence: float
    support: int  # trusted votes for the label
    wrong: dict[str, bool] = field(default_factory=dict)

    @property
    def weight(self) -> float:
        return heuristic_weight(self.wrong)


def trusted_voters(data: ProjectData, bar: float) -> np.ndarray:
    """Voters not gated whose gold accuracy's lower bound (one-sided 95%) clears ``bar``."""
    on_gold = (data.gold[data.vote_item] >= 0) & (data.vote_label >= 0)
    right = on_gold & (data.vote_label == data.gold[data.vote_item])
    total = np.bincount(data.vote_voter[on_gold], minlength=data.n_voters)
    correct = np.bincount(data.vote_voter[right], minlength=data.n_voters)
    status_ok = np.array([s != "gated" for s in data.voter_status], dtype=bool)
    lower = np.array([wilson_lower_bound(int(c), int(t)) for c, t in zip(correct, total, strict=True)])
    return status_ok & (lower >= bar) if data.n_voters else np.zeros(0, dtype=bool)


def mine(
    session: Session, *, project: Project, config: ProjectConfig, min_posterior: float = 0.99,
    min_trusted: int = 2, limit: int | None = None,
) -> list[Candidate]:
    """Gold candidates, most discriminating (highest weight) first."""
    data = load_project(session, project=project, config=config)
    trusted = trusted_voters(data, config.policy.quality_bar)
    cand = ((data.status == "final") & np.isin(data.decided_by, MINABLE) & (data.gold < 0) & (data.final >= 0)
            & (np.nan_to_num(data.confidence) >= min_posterior))
    by_trusted = trusted[data.vote_voter] & (data.vote_label >= 0) if data.n_voters else np.zeros(0, dtype=bool)
    agrees = by_trusted & (data.vote_label == data.final[data.vote_item])
    support = np.bincount(data.vote_item[agrees], minlength=data.n_items)
    against = np.bincount(data.vote_item[by_trusted & ~agrees], minlength=data.n_items)
    rows = np.flatnonzero(cand & (support >= min_trusted) & (against == 0))
    known = np.concatenate([data.gold[data.gold >= 0], data.final[(data.final >= 0) & (data.status == "final")]])
    majority = int(np.bincount(known).argmax()) if known.size else -1
    options = _options(session, config, data.item_id[rows].tolist())
    majority_label = data.codes.labels[majority] if majority >= 0 else None
    out = []
    for r in rows.tolist():
        label = data.codes.labels[int(data.final[r])]
        wrong = lazy_heuristics(label, majority=majority_label, options=options.get(int(data.item_id[r])))
        out.append(Candidate(int(data.item_id[r]), data.external_id[r], label, float(data.confidence[r]), int(support[r]), wrong))
    out.sort(key=lambda c: (-c.weight, -c.confidence, -c.support, c.item_id))
    return out[:limit] if limit is not None else out


def _options(session: Session, config: ProjectConfig, item_ids: list[int]) -> dict[int, list[Any]]:
    schema = config.labels
    if not isinstance(schema, Options) or not item_ids:
        return {}
    out = {}
    for i in range(0, len(item_ids), 500):
        for item_id, fields in session.execute(select(col(Item.id), col(Item.fields)).where(col(Item.id).in_(item_ids[i:i + 500]))).all():
            out[int(item_id)] = schema.options_of(fields)
    return out


def apply(session: Session, *, project: Project, candidates: list[Candidate], split: str = "dev") -> int:
    """Make the candidates gold (source "mined", weighted); returns how many were added."""
    have = set(session.execute(select(col(Gold.item_id)).where(col(Gold.project_id) == project.id)).scalars())
    added = []
    for c in candidates:
        if c.item_id in have:
            continue
        session.add(Gold(project_id=project.id, item_id=c.item_id, label=c.label, source="mined",  # type: ignore[arg-type]
                         weight=round(c.weight, 4), split=split))
        added.append(c.item_id)
    session.flush()
    mark_gold_answers(session, item_ids=added)
    return len(added)

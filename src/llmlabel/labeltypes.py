"""Consensus for the structured label types: multi-label, taxonomy and per-item options.

Each adapter turns stored canonical labels into the engine's arrays, fits the matching
engine model, and turns posteriors back into a canonical label with its confidence:
- multi-label: P(present) per class; the label is the set with P ≥ 0.5 and the confidence is
  that of the least certain class (every class must be settled for the set to be);
- taxonomy: a posterior over leaves; the label is the deepest node whose marginal clears the
  target (its level recorded). The engine wants leaves of one depth, so a shallower leaf is
  padded with a hidden child, which a decision never names;
- options: a posterior over the item's own options; the label is an option index.

Single choice needs none of this: ``decisions`` feeds it to the engine directly, with the
information-gain routing the policy module provides for K×K confusion matrices.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from llmlabel.consensus import Gold as GoldArrays
from llmlabel.consensus import (
    MultiLabelConsensus,
    MultiLabelGold,
    MultiLabelVotes,
    OptionItems,
    OptionsConsensus,
    OptionVotes,
    TaxonomyConsensus,
    TaxonomyVotes,
    VoterKinds,
)
from llmlabel.consensus import Taxonomy as TaxonomyTree
from llmlabel.consensus.votes import ABSTAIN
from llmlabel.schema import MultiLabel, Options, Taxonomy

_PAD = "\x00"


@dataclass
class VoteTable:
    item: np.ndarray  # row index of the item
    voter: np.ndarray  # code of the voter
    labels: list[Any]  # canonical labels, None = abstention
    confidence: np.ndarray
    n_items: int
    n_voters: int
    kinds: VoterKinds
    item_fields: list[dict[str, Any]] | None = None  # only the options type needs them


@dataclass
class Scored:
    label: Any
    confidence: float
    level: int | None
    posterior: dict[str, float]


class MultiLabelModel:
    def __init__(self, schema: MultiLabel) -> None:
        self.classes = schema.class_names
        self.model = MultiLabelConsensus()

    def _votes(self, t: VoteTable) -> MultiLabelVotes:
        cast = np.array([lab is not None for lab in t.labels], dtype=bool)
        chosen = np.zeros((len(t.labels), len(self.classes)), dtype=bool)
        index = {c: i for i, c in enumerate(self.classes)}
        for row, lab in enumerate(t.labels):
            for c in lab or ():
                chosen[row, index[c]] = True
        return MultiLabelVotes(t.item[cast], t.voter[cast], chosen[cast], t.n_items, t.n_voters, t.confidence[cast])

    def fit(self, t: VoteTable, gold: dict[int, Any], weight: dict[int, float]) -> None:
        rows = sorted(gold)
        present = np.zeros((len(rows), len(self.classes)), dtype=bool)
        for r, row in enumerate(rows):
            for c in gold[row]:
                present[r, self.classes.index(c)] = True
        g = MultiLabelGold(np.array(rows, dtype=np.int64), present, np.array([weight[r] for r in rows]))
        self.model.fit(self._votes(t), g if rows else None, t.kinds)

    def score(self, t: VoteTable) -> list[Scored]:
        p = self.model.predict_proba(self._votes(t), t.kinds)
        out = []
        for row in p:
            label = [c for c, q in zip(self.classes, row, strict=True) if q >= 0.5]
            conf = float(np.min(np.maximum(row, 1 - row))) if row.size else 1.0
            out.append(Scored(label, conf, None, dict(zip(self.classes, np.round(row, 6).tolist(), strict=True))))
        return out


class TaxonomyModel:
    def __init__(self, schema: Taxonomy, target: float) -> None:
        self.sep = schema.separator
        self.target = target
        depth = schema.depth
        paths = [tuple(leaf.split(self.sep)) for leaf in schema.leaves]
        self.tree = TaxonomyTree([p + (_PAD,) * (depth - len(p)) for p in paths])
        self.model = TaxonomyConsensus(self.tree)

    def _votes(self, t: VoteTable) -> TaxonomyVotes:
        keep = [i for i, lab in enumerate(t.labels) if lab is not None]
        codes = [self.tree.code(t.labels[i].split(self.sep)) for i in keep]
        idx = np.array(keep, dtype=np.int64)
        return TaxonomyVotes(
            t.item[idx], t.voter[idx], np.array([c[0] for c in codes], dtype=np.int64),
            np.array([c[1] for c in codes], dtype=np.int64), t.n_items, t.n_voters,
        )

    def _leaf_code(self, path: str) -> int:
        parts = tuple(path.split(self.sep))
        padded = parts + (_PAD,) * (self.tree.depth - len(parts))
        return self.tree.leaves.index(padded)

    def fit(self, t: VoteTable, gold: dict[int, Any], weight: dict[int, float]) -> None:
        rows = sorted(r for r in gold if gold[r] is not None)
        leaf_rows = []
        for r in rows:  # gold at a coarse node does not name a leaf: it cannot clamp one
            try:
                leaf_rows.append((r, self._leaf_code(gold[r])))
            except ValueError:
                continue
        g = GoldArrays(np.array([r for r, _ in leaf_rows], dtype=np.int64), np.array([c for _, c in leaf_rows], dtype=np.int64),
                       np.array([weight[r] for r, _ in leaf_rows], dtype=np.float64))
        self.model.fit(self._votes(t), g if leaf_rows else None, t.kinds)

    def score(self, t: VoteTable) -> list[Scored]:
        post = self.model.predict_proba(self._votes(t), t.kinds)
        level, node, prob = self.tree.deepest(post, self.target)
        leaf_best = post.argmax(axis=1)
        out = []
        for i in range(post.shape[0]):
            if level[i] >= 0:
                parts = [p for p in self.tree.nodes[level[i]][node[i]] if p != _PAD]
                conf, lvl = float(prob[i]), len(parts)
            else:  # nothing clears the target yet: the best leaf, provisionally
                parts = [p for p in self.tree.leaves[leaf_best[i]] if p != _PAD]
                conf, lvl = float(post[i].max()), None
            top = np.argsort(post[i])[::-1][:10]
            posterior = {self.sep.join(p for p in self.tree.leaves[j] if p != _PAD): round(float(post[i, j]), 6) for j in top}
            out.append(Scored(self.sep.join(parts), conf, lvl, posterior))
        return out

class OptionsModel:
    def __init__(self, schema: Options) -> None:
        self.schema = schema
        self.model = OptionsConsensus()

    def _items(self, t: VoteTable) -> OptionItems:
        assert t.item_fields is not None
        opts = [self.schema.options_of(f) for f in t.item_fields]
        width = max((len(o) for o in opts), default=2)
        length = np.full((len(opts), max(width, 2)), np.nan)
        for i, o in enumerate(opts):
            length[i, : len(o)] = [max(len(str(x)), 1) for x in o]
        return OptionItems(length)

    def _votes(self, t: VoteTable) -> OptionVotes:
        choice = np.array([ABSTAIN if lab is None else int(lab) for lab in t.labels], dtype=np.int64)
        return OptionVotes(t.item, t.voter, choice, t.n_items, t.n_voters)

    def fit(self, t: VoteTable, gold: dict[int, Any], weight: dict[int, float]) -> None:
        rows = sorted(gold)
        g = GoldArrays(np.array(rows, dtype=np.int64), np.array([int(gold[r]) for r in rows], dtype=np.int64),
                       np.array([weight[r] for r in rows], dtype=np.float64))
        self.model.fit(self._items(t), self._votes(t), g if rows else None, t.kinds)

    def score(self, t: VoteTable) -> list[Scored]:
        post = self.model.predict_proba(self._items(t), self._votes(t), t.kinds)
        best = post.argmax(axis=1)
        return [
            Scored(int(best[i]), float(post[i, best[i]]), None,
                   {str(j): round(float(post[i, j]), 6) for j in range(post.shape[1]) if post[i, j] > 0})
            for i in range(post.shape[0])
        ]


StructuredModel = MultiLabelModel | TaxonomyModel | OptionsModel


def structured_model(schema: Any, target: float) -> StructuredModel:
    if isinstance(schema, MultiLabel):
        return MultiLabelModel(schema)
    if isinstance(schema, Taxonomy):
        return TaxonomyModel(schema, target)
    if isinstance(schema, Options):
        return OptionsModel(schema)
    raise TypeError(f"no structured consensus for {type(schema).__name__}")

"""Multi-label consensus: one binary Dawid–Skene per label.

A voter who ticks a set of labels makes one yes/no statement per label, and voters differ per
label (someone may over-tick "toxic" but never miss "spam"), so each label gets its own K=2
model with its own per-voter matrices, pooled priors, bands and gold. Labels are treated as
independent given the item: co-occurrence structure is left to the schema, not the votes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .dawid_skene import DawidSkene
from .errors import ConsensusInputError
from .votes import BoolArray, FloatArray, Gold, IntArray, VoterKinds, Votes


@dataclass(frozen=True)
class MultiLabelVotes:
    """One row per vote: the set of labels the voter ticked (``chosen[n, l]``)."""

    item: IntArray
    voter: IntArray
    chosen: BoolArray
    n_items: int
    n_voters: int
    confidence: FloatArray | None = None

    def __post_init__(self) -> None:
        chosen = np.asarray(self.chosen, dtype=bool)
        if chosen.ndim != 2 or chosen.shape[0] != np.asarray(self.item).shape[0]:
            raise ConsensusInputError("chosen must be an (n_votes, n_labels) boolean matrix")
        object.__setattr__(self, "chosen", chosen)

    @property
    def n_labels(self) -> int:
        return int(self.chosen.shape[1])

    def binary(self, label: int) -> Votes:
        return Votes(
            self.item,
            self.voter,
            self.chosen[:, label].astype(np.int64),
            self.n_items,
            self.n_voters,
            2,
            self.confidence,
        )


@dataclass(frozen=True)
class MultiLabelGold:
    item: IntArray
    present: BoolArray
    weight: FloatArray | None = None

    def binary(self, label: int) -> Gold:
        return Gold(self.item, np.asarray(self.present)[:, label].astype(np.int64), self.weight)


class MultiLabelConsensus:
    """``predict_proba`` gives P(label present) per item and label, shape (n_items, n_labels)."""

    def __init__(self, **params: Any) -> None:
        self.params = params

    def fit(
        self,
        votes: MultiLabelVotes,
        gold: MultiLabelGold | None = None,
        kinds: VoterKinds | None = None,
    ) -> MultiLabelConsensus:
        self.models_ = [
            DawidSkene(**self.params).fit(
                votes.binary(lab), None if gold is None else gold.binary(lab), kinds
            )
            for lab in range(votes.n_labels)
        ]
        self.posteriors_ = np.stack([m.posteriors_[:, 1] for m in self.models_], axis=1)
        return self

    def predict_proba(self, votes: MultiLabelVotes, kinds: VoterKinds | None = None) -> FloatArray:
        if not hasattr(self, "models_"):
            raise ConsensusInputError("this MultiLabelConsensus is not fitted yet")
        return np.stack(
            [
                m.predict_proba(votes.binary(lab), kinds=kinds)[:, 1]
                for lab, m in enumerate(self.models_)
            ],
            axis=1,
        )

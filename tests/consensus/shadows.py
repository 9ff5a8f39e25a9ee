"""Correlated voters for calibration tests: votes copied by shadow voters."""

from __future__ import annotations

import numpy as np

from llmlabel.consensus import Votes


def with_shadow_copies(v: Votes, copied: Votes, n_voters: int) -> Votes:
    """``v`` plus two shadow voters per voter repeating ``copied`` (a subset of ``v``), so that
    evidence grows slower than the count of votes, as with voters who copy each other."""
    return Votes(
        np.r_[v.item, copied.item, copied.item],
        np.r_[v.voter, copied.voter + n_voters, copied.voter + 2 * n_voters],
        np.r_[v.label, copied.label, copied.label],
        v.n_items,
        3 * n_voters,
        v.n_classes,
    )

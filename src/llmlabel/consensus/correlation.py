"""Damping correlated voters.

Dawid–Skene treats each vote as independent evidence. Two LLM labelers of one model family
(or one prompt run twice) make the same mistakes on the same items, so counting both doubles
the evidence for a shared error and the posterior becomes confidently wrong. We measure, on
gold items both voters labeled, the phi coefficient of their error indicators (1 = wrong):
phi ≈ 0 for voters who err independently, 1 for voters who err together.

Hard items make *every* pair's errors correlate a little, and that is not what we want to
discount (it affects all voters alike and is the calibrator's job), so only the excess over the
typical (median) pair counts. A voter shares gold with many others, and noise in each phi
would add up over all of them, so a pair only counts by how far its phi clears the baseline
plus ``z`` standard errors (1/√n under independence). Each voter's log-likelihood is then
tempered by

    w_v = 1 / (1 + Σ_u excess_phi(v, u))

so k voters that are perfect copies of one another jointly weigh as one voter, while
independent voters keep w = 1. The rule is symmetric, so relabeling voters changes nothing.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

from .votes import ABSTAIN, FloatArray, Gold, IntArray, Votes


def error_phi(
    votes: Votes, gold: Gold, *, min_shared: int = 10
) -> tuple[IntArray, IntArray, FloatArray, IntArray]:
    """Pairs (v, u), v < u, with ≥ min_shared shared gold items: their error phi and overlap."""
    truth = np.full(votes.n_items, -1, dtype=np.int64)
    truth[gold.item] = gold.label
    keep = (votes.label != ABSTAIN) & (truth[votes.item] >= 0)
    voter, item, label = votes.voter[keep], votes.item[keep], votes.label[keep]
    _, first = np.unique(voter * votes.n_items + item, return_index=True)
    voter, item, label = voter[first], item[first], label[first]
    wrong = (label != truth[item]).astype(np.float64)
    shape = (votes.n_voters, votes.n_items)
    s = sparse.csr_matrix((np.ones(voter.shape[0]), (voter, item)), shape=shape)
    e = sparse.csr_matrix((wrong, (voter, item)), shape=shape)
    shared = (s @ s.T).tocoo()
    pick = (shared.row < shared.col) & (shared.data >= min_shared)
    v, u, n = shared.row[pick], shared.col[pick], shared.data[pick]
    if v.shape[0] == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0), empty
    es, se, ee = (e @ s.T).tocsr(), (s @ e.T).tocsr(), (e @ e.T).tocsr()
    a = np.asarray(es[v, u]).ravel()  # v wrong, both voted
    b = np.asarray(se[v, u]).ravel()  # u wrong, both voted
    n11 = np.asarray(ee[v, u]).ravel()
    den = np.sqrt(a * (n - a) * b * (n - b))
    phi = np.divide(n * n11 - a * b, den, out=np.zeros_like(den), where=den > 0)
    return v.astype(np.int64), u.astype(np.int64), phi, n.astype(np.int64)


def correlation_weights(
    votes: Votes,
    gold: Gold,
    *,
    min_shared: int = 10,
    z: float = 3.0,
    min_pairs_for_baseline: int = 10,
) -> FloatArray:
    """Tempering exponent per voter in (0, 1]; 1 for voters with no measured excess correlation."""
    v, u, phi, n = error_phi(votes, gold, min_shared=min_shared)
    weights = np.ones(votes.n_voters)
    if v.shape[0] == 0:
        return weights
    # With few pairs the median would be the suspect pairs themselves, so no baseline then.
    baseline = float(np.median(phi)) if phi.shape[0] >= min_pairs_for_baseline else 0.0
    excess = np.clip(phi - baseline - z / np.sqrt(n), 0.0, 1.0)
    load = np.bincount(v, excess, minlength=votes.n_voters) + np.bincount(
        u, excess, minlength=votes.n_voters
    )
    out: FloatArray = weights / (1.0 + load)
    return out

"""EM building blocks shared by the single-choice and the taxonomy models.

Both models alternate the same two steps over a long vote table — expected confusion counts
from soft truth (M-step) and summed log-likelihoods per item (E-step) — so the vectorized
pieces live here once: a sparse vote index that turns each step into one sparse product, and
the pooled-prior MAP update of confusion matrices.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse

from .votes import FloatArray, IntArray


def softmax_rows(logp: FloatArray) -> FloatArray:
    return softmax_and_lse(logp)[0]


def softmax_and_lse(logp: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Row softmax and log-sum-exp. Reductions run column by column: numpy's axis=1
    reductions over a handful of classes cost several times more than K vector ops."""
    k = logp.shape[1]
    top = logp[:, 0].copy()
    for j in range(1, k):
        np.maximum(top, logp[:, j], out=top)
    p = logp - top[:, None]
    # exp() of very negative numbers takes a slow underflow path (10× here); below −700 the
    # term is < 1e-304 of the top one and cannot change a sum anyway.
    np.maximum(p, -700.0, out=p)
    np.exp(p, out=p)
    total = p[:, 0].copy()
    for j in range(1, k):
        total += p[:, j]
    p /= total[:, None]
    lse: FloatArray = np.log(total) + top
    return p, lse


def normalize_last(x: FloatArray) -> FloatArray:
    out: FloatArray = x / x.sum(axis=-1, keepdims=True)
    return out


def dense_codes(codes: IntArray) -> tuple[IntArray, IntArray]:
    """(sorted distinct codes, each entry's rank among them): np.unique without a sort."""
    present = np.bincount(codes) > 0 if codes.shape[0] else np.zeros(0, dtype=bool)
    rank = np.cumsum(present) - 1
    return np.flatnonzero(present).astype(np.int64), rank[codes].astype(np.int64)


@dataclass(frozen=True)
class VoteIndex:
    """Votes grouped by (voter, said label) as one sparse incidence matrix over items.

    Both EM steps become one sparse product each (pairs × items and its transpose), which is
    what keeps a 100k-vote fit far below a second; duplicate (voter, item) votes add up. Item
    weights scale the truth rows and voter exponents the log-likelihood rows, so one unweighted
    matrix serves both directions.
    """

    pair_voter: IntArray
    pair_label: IntArray
    incidence: sparse.csr_matrix  # pairs × items
    # items × pairs, built once: EM reads it every iteration, and ``incidence.T`` would be a
    # CSC view rebuilt on each call.
    incidence_t: sparse.csr_matrix
    item_weight: FloatArray | None
    pair_scale: FloatArray | None

    @classmethod
    def build(
        cls,
        vv: IntArray,
        label: IntArray,
        item: IntArray,
        n_items: int,
        n_classes: int,
        item_weight: FloatArray | None = None,
        scale: FloatArray | None = None,
    ) -> VoteIndex:
        """``scale`` is per vote but must be constant per voter (it is a voter's exponent)."""
        pairs, inv = dense_codes(vv * n_classes + label)
        incidence = sparse.csr_matrix(
            (np.ones(item.shape[0]), (inv, item)), shape=(pairs.shape[0], n_items)
        )
        pair_scale = None
        if scale is not None:
            pair_scale = np.ones(pairs.shape[0])
            pair_scale[inv] = scale
        return cls(
            pairs // n_classes,
            pairs % n_classes,
            incidence,
            incidence.T.tocsr(),
            item_weight,
            pair_scale,
        )

    def counts(self, truth: FloatArray, n_vv: int) -> FloatArray:
        """Expected counts[true, said, voter] under soft truth (n_items, K)."""
        k = truth.shape[1]
        rows = truth if self.item_weight is None else truth * self.item_weight[:, None]
        out = np.zeros((k, k, n_vv))
        out[:, self.pair_label, self.pair_voter] = (self.incidence @ rows).T
        return out

    def evidence(self, log_pi: FloatArray) -> FloatArray:
        """Σ over an item's votes of scale · log π[:, said, voter], as (n_items, K)."""
        per_pair = np.ascontiguousarray(log_pi[:, self.pair_label, self.pair_voter].T)
        if self.pair_scale is not None:
            per_pair *= self.pair_scale[:, None]
        out: FloatArray = self.incidence_t @ per_pair
        return out


def group_matrix(group: IntArray, n_groups: int) -> sparse.csr_matrix:
    """Sparse (groups × voters) membership, for summing counts by group.

    A sparse sum rather than a dense product: BLAS threads stall on a busy machine.
    """
    n = group.shape[0]
    return sparse.csr_matrix((np.ones(n), (group, np.arange(n))), shape=(n_groups, n))


def pooled_confusion(
    counts: FloatArray,
    group: IntArray,
    member: sparse.csr_matrix,
    one_coin: np.ndarray,
    *,
    strength: float,
    base_accuracy: float,
) -> tuple[FloatArray, FloatArray]:
    """MAP confusion matrices under group-pooled Dirichlet priors: (per voter, per group).

    Arrays are laid out [true, said, voter]: with voters last every operation runs over long
    contiguous rows, which is several times faster than [voter, true, said] for small K.
    """
    k, _, n_vv = counts.shape
    n_groups = member.shape[0]
    if k == 1:  # a level with one node (a taxonomy's root): votes there carry no information
        return np.ones((1, 1, n_vv)), np.ones((1, 1, n_groups))
    base = np.full((k, k), (1.0 - base_accuracy) / (k - 1))
    np.fill_diagonal(base, base_accuracy)
    summed = member @ np.ascontiguousarray(counts.reshape(k * k, n_vv).T)
    gcounts = summed.T.reshape(k, k, n_groups) + strength * base[:, :, None]
    gmean = gcounts / gcounts.sum(axis=1, keepdims=True)
    # One group (the common case) broadcasts instead of gathering a (K, K, voters) copy.
    single = n_vv > 0 and bool((group == group[0]).all())

    def per_voter(x: FloatArray) -> FloatArray:
        return x[:, :, group[:1]] if single else x[:, :, group]

    pi = counts
    if n_vv == 0 or not one_coin.all():
        pi = counts + strength * per_voter(gmean)
        pi /= pi.sum(axis=1, keepdims=True)
    if one_coin.any():
        diag = np.arange(k)
        g_acc = gcounts[diag, diag].sum(axis=0) / gcounts.sum(axis=(0, 1))
        acc = (np.einsum("iin->n", counts) + strength * k * g_acc[group]) / (
            counts.sum(axis=(0, 1)) + strength * k
        )
        off = gmean.copy()
        off[diag, diag] = 0.0
        off /= off.sum(axis=1, keepdims=True)
        coin = per_voter(off) * (1.0 - acc)
        for j in range(k):
            coin[j, j] = acc
        pi = coin if one_coin.all() else np.where(one_coin, coin, pi)
    return pi, gmean

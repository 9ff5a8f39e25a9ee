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

from .votes import BoolArray, FloatArray, IntArray


def softmax_rows(logp: FloatArray) -> FloatArray:
    return softmax_and_lse(logp)[0]


def softmax_and_lse(
    logp: FloatArray, shift: FloatArray | None = None
) -> tuple[FloatArray, FloatArray]:
    """Row softmax and log-sum-exp of ``logp + shift`` (shift: one value per class, such as
    a log prior), computed on a class-major copy.

    With a handful of classes, row-wise numpy (axis=1 reductions, ``p - top[:, None]``) runs
    inner loops of length K; on a (K, n) copy every step is one contiguous vector op over n,
    about twice as fast over the whole softmax even with the two transposing copies.
    """
    p = np.ascontiguousarray(logp.T)
    k = p.shape[0]
    if shift is not None:
        p += shift[:, None]
    top = p[0].copy()
    for j in range(1, k):
        np.maximum(top, p[j], out=top)
    p -= top
    # exp() of very negative numbers takes a slow underflow path (10× here); below −700 the
    # term is < 1e-304 of the top one and cannot change a sum anyway.
    np.maximum(p, -700.0, out=p)
    np.exp(p, out=p)
    total = p[0].copy()
    for j in range(1, k):
        total += p[j]
    p /= total
    lse: FloatArray = np.log(total) + top
    return np.ascontiguousarray(p.T), lse


def normalize_last(x: FloatArray) -> FloatArray:
    out: FloatArray = x / x.sum(axis=-1, keepdims=True)
    return out


def dense_codes(codes: IntArray) -> tuple[IntArray, IntArray]:
    """(sorted distinct codes, each entry's rank among them): np.unique without a sort."""
    present = np.bincount(codes) > 0 if codes.shape[0] else np.zeros(0, dtype=bool)
    rank = np.cumsum(present) - 1
    return np.flatnonzero(present).astype(np.int64), rank[codes].astype(np.int64)


@dataclass(frozen=True)
class VotePatterns:
    """Items grouped by identical votes: EM runs once per distinct pattern, not per item.

    An item's posterior depends only on the multiset of its (voter, band, label) votes, so
    items with the same multiset share one posterior throughout EM; the M-step counts each
    pattern as many times as it occurs. This is exact (sums agree to rounding), and it is the
    common case wherever few voters see many items: on the crowd sets it leaves 16% of
    product's items and 71% of adult's; a project with a handful of LLM voters has at most a
    few hundred patterns however many items it holds.

    Patterns are found by hashing: each vote code gets two random integers below 2**bits,
    chosen so that an item's sums stay below 2**53 and are exact in floating point whatever the
    summation order. Two different multisets collide in one hash with probability at most
    2**-bits (fix every random value but one), in both at most 2**-(2·bits): below 1e-28 per
    pair of items for items of up to 30 votes. Items are grouped where both sums agree with
    their neighbour's after sorting by the first; the rare item split from its twins by a
    collision in the first sum only costs a pattern, never merges different items. Patterns
    are numbered in the order of their first item, so a table without repeats keeps its item
    order (and its arithmetic).
    """

    of_item: IntArray  # pattern of each item
    first: IntArray  # the first item of each pattern, increasing
    count: FloatArray  # items per pattern

    @property
    def n_patterns(self) -> int:
        return int(self.first.shape[0])

    @classmethod
    def build(
        cls, code: IntArray, n_codes: int, item: IntArray, n_items: int, alone: IntArray
    ) -> VotePatterns:
        """``code`` in [0, n_codes) identifies a vote's (voter, band, label); ``alone`` items
        (gold, which is clamped per item) never share a pattern."""
        n_votes = np.bincount(item, minlength=n_items)
        bits = 53 - int(np.ceil(np.log2(int(n_votes.max(initial=0)) + 1)))
        draws = np.random.default_rng(0).integers(0, 2**bits, size=(2, n_codes)).astype(float)
        h0, h1 = (np.bincount(item, d[code], n_items) for d in draws)
        h0[alone] = -1.0 - alone  # no vote sum is negative
        order = np.argsort(h0)
        s0, s1 = h0[order], h1[order]
        starts = np.ones(n_items, dtype=bool)
        starts[1:] = (s0[1:] != s0[:-1]) | (s1[1:] != s1[:-1])
        at = np.flatnonzero(starts)
        heads = np.minimum.reduceat(order, at) if n_items else np.zeros(0, dtype=np.int64)
        rank = np.empty(heads.shape[0], dtype=np.int64)
        rank[np.argsort(heads)] = np.arange(heads.shape[0])
        of_item = np.empty(n_items, dtype=np.int64)
        of_item[order] = rank[np.cumsum(starts) - 1]
        return cls(of_item, np.sort(heads), np.bincount(of_item).astype(np.float64))


@dataclass(frozen=True)
class VoteIndex:
    """Votes grouped by (voter, said label) as one sparse incidence matrix over items.

    Both EM steps become one sparse product each (items × pairs and its transpose), which is
    what keeps a 100k-vote fit far below a second; duplicate (voter, item) votes add up. Item
    weights scale the truth rows and voter exponents the log-likelihood rows, so one unweighted
    matrix serves both directions.

    Only items × pairs CSRs are stored; the M-step reads the transpose, a free CSC view.
    Both products then walk the items in order and touch the small pairs-sized table at
    random, which keeps it in cache: a pairs × items CSR product instead reads the
    items-sized truth table at random and took twice as long on adult (92k votes). Item
    weights sit in the M-step matrix's entries, which saves a pass over the truth table.
    """

    pair_voter: IntArray
    pair_label: IntArray
    incidence_t: sparse.csr_matrix  # items × pairs, for the E-step
    weighted_t: sparse.csr_matrix  # the same with entries × item weight, for the M-step
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
        incidence_t = sparse.csr_matrix(
            (np.ones(item.shape[0]), (item, inv)), shape=(n_items, pairs.shape[0])
        )
        weighted_t = incidence_t
        if item_weight is not None:
            row = np.repeat(np.arange(n_items), np.diff(incidence_t.indptr))
            weighted_t = sparse.csr_matrix(
                (incidence_t.data * item_weight[row], incidence_t.indices, incidence_t.indptr),
                shape=incidence_t.shape,
            )
        pair_scale = None
        if scale is not None:
            pair_scale = np.ones(pairs.shape[0])
            pair_scale[inv] = scale
        return cls(pairs // n_classes, pairs % n_classes, incidence_t, weighted_t, pair_scale)

    def counts(self, truth: FloatArray, n_vv: int) -> FloatArray:
        """Expected counts[true, said, voter] under soft truth (n_items, K)."""
        k = truth.shape[1]
        out = np.zeros((k, k, n_vv))
        out[:, self.pair_label, self.pair_voter] = (self.weighted_t.T @ truth).T
        return out

    def evidence(self, log_pi: FloatArray) -> FloatArray:
        """Σ over an item's votes of scale · log π[:, said, voter], as (n_items, K)."""
        per_pair = np.ascontiguousarray(log_pi[:, self.pair_label, self.pair_voter].T)
        if self.pair_scale is not None:
            per_pair *= self.pair_scale[:, None]
        out: FloatArray = self.incidence_t @ per_pair
        return out


MIN_OWN_VOTES = 2


def one_coin_mask(n_votes: IntArray, one_coin_below: int) -> BoolArray:
    """Voters with too few votes for a full matrix (see ``Pooling``)."""
    out: BoolArray = n_votes < max(one_coin_below, MIN_OWN_VOTES)
    return out


@dataclass(frozen=True)
class Pooling:
    """Who is pooled with whom, fixed for one fit: MAP confusion matrices under group-pooled
    Dirichlet priors are ``confusion(counts)``, called once per EM step.

    Three regimes per (voter, band), by its number of votes ``n``:

    * ``n >= one_coin_below``: its own full matrix, Dirichlet-pooled toward its group's.
    * fewer: one accuracy, Beta-pooled toward its group's, errors shaped like the group's.
    * ``n < MIN_OWN_VOTES`` (one vote): its group's accuracy, not its own. A single vote's
      "accuracy" is its agreement with a posterior that includes that very vote; estimating
      it feeds each item's posterior back into itself, which on sets of one-vote voters
      (amazon_negative, sst2_crowd) left EM creeping for 15–30 steps while moving nothing
      but that loop.

    Arrays are laid out [true, said, voter]: with voters last every operation runs over long
    contiguous rows, which is several times faster than [voter, true, said] for small K.
    """

    group: IntArray
    member: sparse.csr_matrix  # groups × voters, for summing counts by group
    one_coin: BoolArray
    own: FloatArray  # 1.0 where a voter's own votes inform its accuracy, else 0.0
    base: FloatArray  # (K, K) prior mean of a group's matrix before any counts
    strength: float
    single: bool  # one group: broadcast instead of gathering a (K, K, voters) copy

    @classmethod
    def build(
        cls,
        group: IntArray,
        n_groups: int,
        n_votes: IntArray,
        n_classes: int,
        *,
        strength: float,
        base_accuracy: float,
        one_coin_below: int,
    ) -> Pooling:
        k = n_classes
        base = np.full((k, k), (1.0 - base_accuracy) / max(k - 1, 1))
        np.fill_diagonal(base, base_accuracy)
        n = group.shape[0]
        # A sparse sum rather than a dense product: BLAS threads stall on a busy machine.
        member = sparse.csr_matrix((np.ones(n), (group, np.arange(n))), shape=(n_groups, n))
        return cls(
            group=group,
            member=member,
            one_coin=one_coin_mask(n_votes, one_coin_below),
            own=(n_votes >= MIN_OWN_VOTES).astype(np.float64),
            base=base,
            strength=strength,
            single=n > 0 and bool((group == group[0]).all()),
        )

    def _per_voter(self, x: FloatArray) -> FloatArray:
        return x[:, :, self.group[:1]] if self.single else x[:, :, self.group]

    def confusion(self, counts: FloatArray) -> tuple[FloatArray, FloatArray]:
        """(per voter, per group) matrices from expected counts[true, said, voter]."""
        k, _, n_vv = counts.shape
        n_groups = self.member.shape[0]
        if k == 1:  # a level with one node (a taxonomy's root): votes there carry no information
            return np.ones((1, 1, n_vv)), np.ones((1, 1, n_groups))
        strength, one_coin = self.strength, self.one_coin
        summed = self.member @ np.ascontiguousarray(counts.reshape(k * k, n_vv).T)
        gcounts = summed.T.reshape(k, k, n_groups) + strength * self.base[:, :, None]
        gmean = gcounts / gcounts.sum(axis=1, keepdims=True)
        pi = counts
        if n_vv == 0 or not one_coin.all():
            pi = counts + strength * self._per_voter(gmean)
            pi /= pi.sum(axis=1, keepdims=True)
        if one_coin.any():
            diag = np.arange(k)
            g_acc = gcounts[diag, diag].sum(axis=0) / gcounts.sum(axis=(0, 1))
            prior = strength * k
            own_right = np.einsum("iin->n", counts) * self.own
            own_total = counts.sum(axis=(0, 1)) * self.own
            acc = (own_right + prior * g_acc[self.group]) / (own_total + prior)
            off = gmean.copy()
            off[diag, diag] = 0.0
            off /= off.sum(axis=1, keepdims=True)
            coin = self._per_voter(off) * (1.0 - acc)
            for j in range(k):
                coin[j, j] = acc
            pi = coin if one_coin.all() else np.where(one_coin, coin, pi)
        return pi, gmean

"""Hierarchical labels: a posterior over leaves, votes at any depth.

The truth is always a leaf; a vote names a node at some level ("animal", or "animal/cat").
Each voter has one confusion matrix per level, over that level's nodes: how often it says node
m when the truth lies under node n. A vote at level l is then a likelihood over leaves that is
constant within each level-l subtree, π_{v,l}[ancestor_l(leaf), said], so a coarse vote is
evidence for every leaf below its node and says nothing about which one, while a voter who is
reliable at the coarse level and sloppy at the fine one is modelled as exactly that.

Deciding: marginals per level are sums over subtrees, and an item is finalized at the deepest
level whose best node clears the target, so "animal" can be final while "cat vs dog" waits.
Leaves are kept sorted by path, which makes every subtree a contiguous block of columns and
every marginal one ``np.add.reduceat``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .em import Pooling, VoteIndex, dense_codes, softmax_and_lse
from .errors import ConsensusInputError
from .votes import FloatArray, Gold, IntArray, VoterKinds


class Taxonomy:
    """Leaves given as root→leaf paths, all of the same depth."""

    def __init__(self, paths: Sequence[Sequence[str]]) -> None:
        leaves = sorted({tuple(str(p) for p in path) for path in paths})
        if not leaves or len({len(p) for p in leaves}) != 1:
            raise ConsensusInputError("taxonomy paths must be non-empty and of one depth")
        self.leaves: tuple[tuple[str, ...], ...] = tuple(leaves)
        self.depth = len(leaves[0])
        self.nodes: list[tuple[tuple[str, ...], ...]] = []
        self.ancestor: list[IntArray] = []
        self.starts: list[IntArray] = []
        for level in range(self.depth):
            prefixes = [leaf[: level + 1] for leaf in leaves]
            nodes = tuple(dict.fromkeys(prefixes))
            code = {n: i for i, n in enumerate(nodes)}
            anc = np.array([code[p] for p in prefixes], dtype=np.int64)
            self.nodes.append(nodes)
            self.ancestor.append(anc)
            self.starts.append(np.flatnonzero(np.r_[True, anc[1:] != anc[:-1]]))

    @property
    def n_leaves(self) -> int:
        return len(self.leaves)

    def code(self, path: Sequence[str]) -> tuple[int, int]:
        """(level, node code) of a path prefix such as ("animal",) or ("animal", "cat")."""
        key = tuple(str(p) for p in path)
        level = len(key) - 1
        if not 0 <= level < self.depth or key not in self.nodes[level]:
            raise ConsensusInputError(f"'{'/'.join(key)}' is not a node of the taxonomy")
        return level, self.nodes[level].index(key)

    def marginals(self, posteriors: FloatArray) -> list[FloatArray]:
        """Per level, (n_items, n_nodes) probabilities of each node."""
        return [np.add.reduceat(posteriors, s, axis=1) for s in self.starts]

    def deepest(
        self, posteriors: FloatArray, target: float
    ) -> tuple[IntArray, IntArray, FloatArray]:
        """Per item: deepest level whose best node reaches target (−1: none), node, its prob."""
        n = posteriors.shape[0]
        level = np.full(n, -1, dtype=np.int64)
        node = np.full(n, -1, dtype=np.int64)
        prob = np.zeros(n)
        for lv, marg in enumerate(self.marginals(posteriors)):
            best, p = marg.argmax(axis=1), marg.max(axis=1)
            ok = p >= target
            level[ok], node[ok], prob[ok] = lv, best[ok], p[ok]
        return level, node, prob


@dataclass(frozen=True)
class TaxonomyVotes:
    """One row per vote: the node said (a code within ``level``)."""

    item: IntArray
    voter: IntArray
    level: IntArray
    node: IntArray
    n_items: int
    n_voters: int


class TaxonomyConsensus:
    """Dawid–Skene over leaves with per-(voter, level) matrices pooled by kind."""

    def __init__(
        self,
        taxonomy: Taxonomy,
        *,
        prior_strength: float = 2.0,
        base_accuracy: float = 0.7,
        one_coin_below: int = 10,
        max_iter: int = 100,
        tol: float = 1e-6,
    ) -> None:
        if max_iter < 1:
            raise ConsensusInputError(f"max_iter must be at least 1, got {max_iter}")
        self.taxonomy = taxonomy
        self.prior_strength = prior_strength
        self.base_accuracy = base_accuracy
        self.one_coin_below = one_coin_below
        self.max_iter = max_iter
        self.tol = tol

    def _check(self, votes: TaxonomyVotes) -> None:
        tax = self.taxonomy
        if ((votes.level < 0) | (votes.level >= tax.depth)).any():
            raise ConsensusInputError(f"vote levels must be in [0, {tax.depth - 1}]")
        sizes = np.array([len(n) for n in tax.nodes])
        if ((votes.node < 0) | (votes.node >= sizes[votes.level])).any():
            raise ConsensusInputError("a vote names a node code outside its level")

    def _evidence(
        self, votes: TaxonomyVotes, log_pi: list[FloatArray], w_item: FloatArray | None = None
    ) -> FloatArray:
        ev = np.zeros((votes.n_items, self.taxonomy.n_leaves))
        for lv, lp in enumerate(log_pi):
            m = votes.level == lv
            k = lp.shape[0]
            index = VoteIndex.build(votes.voter[m], votes.node[m], votes.item[m], votes.n_items, k)
            ev += index.evidence(lp)[:, self.taxonomy.ancestor[lv]]
        return ev

    def fit(
        self, votes: TaxonomyVotes, gold: Gold | None = None, kinds: VoterKinds | None = None
    ) -> TaxonomyConsensus:
        self._check(votes)
        tax = self.taxonomy
        kinds = kinds if kinds is not None else VoterKinds.uniform(votes.n_voters)
        n_groups = len(kinds.names)
        w_item = np.ones(votes.n_items)
        if gold is not None and len(gold):
            gold.check(votes.n_items, tax.n_leaves)
            w_item[gold.item] = gold.w
        levels = []
        for lv in range(tax.depth):
            m = votes.level == lv
            k = len(tax.nodes[lv])
            active, vv = dense_codes(votes.voter[m])
            pooling = Pooling.build(
                kinds.kind[active],
                n_groups,
                np.bincount(vv, minlength=active.shape[0]),
                k,
                strength=self.prior_strength,
                base_accuracy=self.base_accuracy,
                one_coin_below=self.one_coin_below,
            )
            index = VoteIndex.build(
                vv, votes.node[m], votes.item[m], votes.n_items, k, item_weight=w_item
            )
            levels.append((active, pooling, index))

        # Start from every voter at the base accuracy (a weighted majority vote over leaves):
        # a uniform start is a fixed point of EM with nothing to break the symmetry.
        logp = np.zeros((votes.n_items, tax.n_leaves))
        for lv, (active, pooling, index) in enumerate(levels):
            tiled = np.repeat(np.log(pooling.base)[:, :, None], active.shape[0], axis=2)
            logp += index.evidence(tiled)[:, tax.ancestor[lv]]
        truth = softmax_and_lse(logp)[0]
        if gold is not None and len(gold):
            truth[gold.item] = np.eye(tax.n_leaves)[gold.label]
        last = -np.inf
        for n_iter in range(1, self.max_iter + 1):
            self.n_iter_ = n_iter
            logp = np.zeros_like(truth)
            fitted = []
            for lv, (active, pooling, index) in enumerate(levels):
                counts = index.counts(
                    np.add.reduceat(truth, tax.starts[lv], axis=1), active.shape[0]
                )
                pi, gmean = pooling.confusion(counts)
                fitted.append((pi, gmean))
                logp += index.evidence(np.log(pi))[:, tax.ancestor[lv]]
            prior = np.einsum("n,nk->k", w_item, truth) + 1.0
            prior /= prior.sum()
            logp += np.log(prior)
            truth, lse = softmax_and_lse(logp)
            if gold is not None and len(gold):
                truth[gold.item] = np.eye(tax.n_leaves)[gold.label]
                lse[gold.item] = logp[gold.item, gold.label]
            loglik = float(np.sum(lse * w_item))
            if abs(loglik - last) <= self.tol * abs(loglik):
                break
            last = loglik
        self.confusion_: list[FloatArray] = []
        self.kind_confusion_: list[FloatArray] = []
        for (active, _, _), (pi, gmean) in zip(levels, fitted, strict=True):
            full = gmean[:, :, kinds.kind[: votes.n_voters]]
            full[:, :, active] = pi
            self.confusion_.append(full)
            self.kind_confusion_.append(gmean)
        self.class_prior_ = prior
        self.kinds_ = kinds
        self.posteriors_ = truth
        return self

    def predict_proba(self, votes: TaxonomyVotes, kinds: VoterKinds | None = None) -> FloatArray:
        """Leaf posteriors; voters unseen at fit time count as new voters of their kind."""
        if not hasattr(self, "confusion_"):
            raise ConsensusInputError("this TaxonomyConsensus is not fitted yet")
        self._check(votes)
        n_fit = self.confusion_[0].shape[2]
        kind = (kinds or self.kinds_).kind
        tables = []
        for pi, gmean in zip(self.confusion_, self.kind_confusion_, strict=True):
            extra = votes.n_voters - n_fit
            if extra > 0:
                pi = np.concatenate([pi, gmean[:, :, kind[n_fit : votes.n_voters]]], axis=2)
            tables.append(np.log(pi))
        return softmax_and_lse(np.log(self.class_prior_) + self._evidence(votes, tables))[0]

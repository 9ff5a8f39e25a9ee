"""Dawid–Skene with pooled Dirichlet priors: the single-choice consensus model.

Why the pieces are there:

* **Pooling by kind.** A voter with ten votes has a confusion matrix that is mostly noise. Each
  voter's Dirichlet prior is centred on the pooled matrix of its kind (human, expert, llm, …)
  and re-estimated every EM step from all voters of that kind (empirical Bayes), so a newcomer
  starts at its population's reliability and moves to its own as its votes accrue.
* **One-coin fallback.** Below ``one_coin_below`` votes even a pooled full matrix over-reads
  chance patterns, so such a voter gets one accuracy (Beta-pooled toward its kind's accuracy)
  with the off-diagonal mass shaped like its kind's errors. A voter with a single vote keeps
  its kind's accuracy (see ``em.Pooling``): that vote's agreement with a posterior it is part
  of is no evidence about the voter.
* **Confidence bands.** An LLM's stated confidence is not a probability until measured. Each
  (voter, band) pair is a voter of its own with its own matrix, pooled toward the (kind, band)
  average, so how much a "0.95" is worth is learned from gold instead of assumed.
* **Gold clamps.** Gold items have known truth; they enter the M-step with their weight and
  are never re-estimated, which anchors label switching and supervises the matrices.
* **Tempering weights.** ``weights`` (one exponent per voter, see ``correlation.py``) scale a
  voter's log-likelihood so that correlated voters are not counted as independent evidence.

Each EM step is one sparse product over the vote table (see ``em.py``); the only Python loop
is over EM iterations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .em import (
    Pooling,
    VoteIndex,
    VotePatterns,
    dense_codes,
    normalize_last,
    one_coin_mask,
    softmax_and_lse,
    softmax_rows,
)
from .errors import ConsensusInputError
from .votes import ABSTAIN, FloatArray, Gold, IntArray, VoterKinds, Votes

SMALL_TABLE = 256  # votes below which log_posterior sums directly instead of building the index


def _cast_loglik(idx: IntArray, table: FloatArray, scale: FloatArray, said: IntArray) -> FloatArray:
    """(cast votes, K): each cast vote's tempered log π[v, :, said] (see ``_vote_params``)."""
    out: FloatArray = table[idx, :, said] * scale[:, None]
    return out


@dataclass(frozen=True)
class Bands:
    """Confidence bands: band 0 holds votes without a confidence, bands 1.. split at ``edges``."""

    edges: tuple[float, ...] = (0.7, 0.9, 0.97)

    @property
    def n_bands(self) -> int:
        return len(self.edges) + 2

    def code(self, confidence: FloatArray) -> IntArray:
        band = np.digitize(np.nan_to_num(confidence), self.edges).astype(np.int64) + 1
        band[np.isnan(confidence)] = 0
        return band


class DawidSkene:
    """Single-choice consensus: per-voter confusion matrices, class priors, EM with gold.

    ``fit(votes, gold, kinds, weights)`` learns; ``predict_proba(votes, gold, kinds)`` applies
    the learned matrices to any vote table coded the same way (voters beyond the fitted ones
    are treated as new voters of their kind); ``update`` adds one vote to one posterior row.
    """

    def __init__(
        self,
        *,
        prior_strength: float = 2.0,
        base_accuracy: float = 0.7,
        one_coin_below: int = 10,
        bands: Bands | None = None,
        class_prior_strength: float = 1.0,
        max_iter: int = 100,
        tol: float = 1e-6,
    ) -> None:
        if max_iter < 1:
            raise ConsensusInputError(f"max_iter must be at least 1, got {max_iter}")
        self.prior_strength = prior_strength
        self.base_accuracy = base_accuracy
        self.one_coin_below = one_coin_below
        self.bands = bands if bands is not None else Bands()
        self.class_prior_strength = class_prior_strength
        self.max_iter = max_iter
        self.tol = tol

    def get_params(self) -> dict[str, Any]:
        return {
            "prior_strength": self.prior_strength,
            "base_accuracy": self.base_accuracy,
            "one_coin_below": self.one_coin_below,
            "bands": self.bands,
            "class_prior_strength": self.class_prior_strength,
            "max_iter": self.max_iter,
            "tol": self.tol,
        }

    def clone(self) -> DawidSkene:
        return type(self)(**self.get_params())

    # -- fitting ---------------------------------------------------------------------------
    def fit(
        self,
        votes: Votes,
        gold: Gold | None = None,
        kinds: VoterKinds | None = None,
        weights: FloatArray | None = None,
    ) -> DawidSkene:
        k, nb = votes.n_classes, self.bands.n_bands
        kinds = kinds if kinds is not None else VoterKinds.uniform(votes.n_voters)
        if kinds.kind.shape[0] < votes.n_voters:
            raise ConsensusInputError(
                f"kinds cover {kinds.kind.shape[0]} voters, votes have {votes.n_voters}"
            )
        w_voter = np.ones(votes.n_voters) if weights is None else np.asarray(weights, float)
        if w_voter.shape[0] < votes.n_voters or (w_voter <= 0).any() or (w_voter > 1).any():
            raise ConsensusInputError("weights must be one value in (0, 1] per voter")
        cast = votes.label != ABSTAIN
        self.abstentions_ = np.bincount(votes.voter[~cast], minlength=votes.n_voters)
        item, voter, label = votes.item[cast], votes.voter[cast], votes.label[cast]
        band = self.bands.code(votes.conf[cast])
        vv_all = voter * nb + band
        n_vv = votes.n_voters * nb
        group_all = (np.repeat(kinds.kind[: votes.n_voters], nb) * nb) + np.tile(
            np.arange(nb), votes.n_voters
        )
        n_groups = len(kinds.names) * nb
        self.vote_counts_ = np.bincount(vv_all, minlength=n_vv).reshape(votes.n_voters, nb)
        counts_all = self.vote_counts_.ravel()
        one_coin_all = one_coin_mask(counts_all, self.one_coin_below)
        # Only (voter, band) pairs that voted carry parameters during EM; the rest sit at
        # their group's mean, which is also where a voter unseen at fit time starts.
        active, vv = dense_codes(vv_all)
        pooling = Pooling.build(
            group_all[active],
            n_groups,
            counts_all[active],
            k,
            strength=self.prior_strength,
            base_accuracy=self.base_accuracy,
            one_coin_below=self.one_coin_below,
        )

        gold_item = np.zeros(0, dtype=np.int64)
        if gold is not None and len(gold):
            gold.check(votes.n_items, k)
            gold_item = gold.item
        # EM runs over distinct vote patterns (see ``em.VotePatterns``); a pattern's weight is
        # the number of items that share it, or a gold item's weight (gold items stand alone).
        patterns = VotePatterns.build(
            vv * k + label, active.shape[0] * k, item, votes.n_items, gold_item
        )
        n_rows = patterns.n_patterns
        w_item = patterns.count
        clamp = None
        if gold is not None and len(gold):
            gold_row = patterns.of_item[gold.item]
            w_item[gold_row] = gold.w
            clamp = np.zeros((len(gold), k))
            clamp[np.arange(len(gold)), gold.label] = 1.0
        head = np.zeros(votes.n_items, dtype=bool)
        head[patterns.first] = True
        keep = head[item]
        row = patterns.of_item[item[keep]]
        index = VoteIndex.build(
            vv[keep],
            label[keep],
            row,
            n_rows,
            k,
            item_weight=None if bool((w_item == 1.0).all()) else w_item,
            scale=None if weights is None else w_voter[voter[keep]],
        )

        mv = np.bincount(row * k + label[keep], minlength=n_rows * k).reshape(-1, k) + 1e-2
        truth = normalize_last(mv.astype(np.float64))
        if clamp is not None:
            truth[gold_row] = clamp
        last = -np.inf
        for n_iter in range(1, self.max_iter + 1):
            self.n_iter_ = n_iter
            counts = index.counts(truth, active.shape[0])
            pi, gmean = pooling.confusion(counts)
            prior = np.einsum("n,nk->k", w_item, truth) + self.class_prior_strength
            prior = prior / prior.sum()
            log_prior = np.log(prior)
            ev = index.evidence(np.log(pi))
            new, lse = softmax_and_lse(ev, log_prior)
            if clamp is not None and gold is not None:
                new[gold_row] = clamp
                lse[gold_row] = ev[gold_row, gold.label] + log_prior[gold.label]
            # Stop on the marginal log-likelihood, the quantity EM increases: on sparse data a
            # few items' posteriors keep swinging long after the likelihood has flattened.
            loglik = float(np.sum(lse * w_item))
            truth = new
            if abs(loglik - last) <= self.tol * abs(loglik):
                break
            last = loglik
        full = gmean[:, :, group_all]
        full[:, :, active] = pi
        self.confusion_ = full.transpose(2, 0, 1).reshape(votes.n_voters, nb, k, k).copy()
        self.kind_confusion_ = gmean.transpose(2, 0, 1).reshape(len(kinds.names), nb, k, k).copy()
        self.class_prior_ = prior
        self.one_coin_ = one_coin_all.reshape(votes.n_voters, nb)
        self.weights_ = w_voter[: votes.n_voters].copy()
        self.kinds_ = kinds
        self.kind_vote_counts_ = np.bincount(
            group_all, self.vote_counts_.ravel(), minlength=n_groups
        ).reshape(len(kinds.names), nb)
        self.posteriors_ = truth[patterns.of_item]
        return self

    # -- applying --------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "confusion_"):
            raise ConsensusInputError("this DawidSkene is not fitted yet; call fit() first")

    def _vote_params(
        self, votes: Votes, kinds: VoterKinds | None
    ) -> tuple[IntArray, FloatArray, FloatArray]:
        """(index into a log-π table, that table, per-vote scale) for the cast votes."""
        self._check_fitted()
        if votes.n_classes != self.class_prior_.shape[0]:
            raise ConsensusInputError(
                f"votes have {votes.n_classes} classes, the model was fitted on "
                f"{self.class_prior_.shape[0]}"
            )
        n_fit, nb, k, _ = self.confusion_.shape
        cast = votes.label != ABSTAIN
        voter, band = votes.voter[cast], self.bands.code(votes.conf[cast])
        new = voter >= n_fit
        kind_of_new = np.zeros(voter.shape[0], dtype=np.int64)
        if new.any():
            if kinds is None or kinds.kind.shape[0] < votes.n_voters:
                kind_of_new[new] = self.kinds_.kind[0] if n_fit else 0
            else:
                kind_of_new[new] = kinds.kind[voter[new]]
        table = np.log(
            np.concatenate(
                [self.confusion_.reshape(-1, k, k), self.kind_confusion_.reshape(-1, k, k)]
            )
        )
        idx = np.where(
            new, n_fit * nb + kind_of_new * nb + band, np.minimum(voter, n_fit - 1) * nb + band
        )
        scale = np.where(new, 1.0, self.weights_[np.minimum(voter, n_fit - 1)])
        return idx, table, scale

    def log_posterior(self, votes: Votes, kinds: VoterKinds | None = None) -> FloatArray:
        """Unnormalized log posterior per item (the logits calibration rescales)."""
        idx, table, scale = self._vote_params(votes, kinds)
        cast = votes.label != ABSTAIN
        if idx.shape[0] <= SMALL_TABLE:
            # a few votes (one item, re-decided after a vote): summing them directly is far
            # cheaper than setting up the sparse index
            ev = np.zeros((votes.n_items, table.shape[1]))
            np.add.at(ev, votes.item[cast], _cast_loglik(idx, table, scale, votes.label[cast]))
            return np.log(self.class_prior_) + ev
        index = VoteIndex.build(
            idx,
            votes.label[cast],
            votes.item[cast],
            votes.n_items,
            table.shape[1],
            scale=None if bool((scale == 1.0).all()) else scale,
        )
        ev = index.evidence(np.ascontiguousarray(table.transpose(1, 2, 0)))
        out: FloatArray = np.log(self.class_prior_) + ev
        return out

    def vote_log_likelihood(self, votes: Votes, kinds: VoterKinds | None = None) -> FloatArray:
        """(n_votes, K): each vote's tempered log π[v, :, said]; zeros for abstentions."""
        idx, table, scale = self._vote_params(votes, kinds)
        cast = votes.label != ABSTAIN
        out = np.zeros((len(votes), table.shape[1]))
        out[cast] = _cast_loglik(idx, table, scale, votes.label[cast])
        return out

    def predict_proba(
        self, votes: Votes, gold: Gold | None = None, kinds: VoterKinds | None = None
    ) -> FloatArray:
        post = softmax_rows(self.log_posterior(votes, kinds))
        if gold is not None and len(gold):
            gold.check(votes.n_items, votes.n_classes)
            post[gold.item] = 0.0
            post[gold.item, gold.label] = 1.0
        return post

    def predict(self, votes: Votes, gold: Gold | None = None) -> IntArray:
        out: IntArray = self.predict_proba(votes, gold).argmax(axis=1)
        return out

    def kind_matrices(self) -> FloatArray:
        """(n_kinds, K, K): each kind's pooled matrix, bands mixed as that kind used them.

        This is what a vote from "some voter of this kind" is worth before we know who or at
        what confidence, which is the question the routing policy asks.
        """
        self._check_fitted()
        mix = self.kind_vote_counts_.astype(np.float64)
        mix[mix.sum(axis=1) == 0, 0] = 1.0
        mix = mix / mix.sum(axis=1, keepdims=True)
        out: FloatArray = np.einsum("gb,gbij->gij", mix, self.kind_confusion_)
        return out

    def vote_reliability(self, votes: Votes, kinds: VoterKinds | None = None) -> FloatArray:
        """P(truth = what the voter said | the voter said it), per vote; NaN for abstentions."""
        idx, table, _ = self._vote_params(votes, kinds)
        cast = votes.label != ABSTAIN
        said = votes.label[cast]
        joint = self.class_prior_[None, :] * np.exp(table[idx, :, said])
        out = np.full(len(votes), np.nan)
        out[cast] = joint[np.arange(said.shape[0]), said] / joint.sum(axis=1)
        return out

    def update(
        self,
        row: FloatArray,
        voter: int,
        label: int,
        confidence: float = float("nan"),
        kind: int | None = None,
    ) -> FloatArray:
        """One item's posterior after one more vote, in O(K) with the fitted matrices."""
        self._check_fitted()
        if label == ABSTAIN:
            return np.array(row, dtype=np.float64)
        band = int(self.bands.code(np.array([confidence], dtype=np.float64))[0])
        if 0 <= voter < self.confusion_.shape[0]:
            pi_col = self.confusion_[voter, band, :, label]
            w = float(self.weights_[voter])
        else:
            k_code = kind if kind is not None else int(self.kinds_.kind[0])
            pi_col = self.kind_confusion_[k_code, band, :, label]
            w = 1.0
        new = np.asarray(row, dtype=np.float64) * pi_col**w
        total = new.sum()
        if total <= 0:
            raise ConsensusInputError("posterior row has no mass left after the update")
        out: FloatArray = new / total
        return out

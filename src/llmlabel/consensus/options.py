"""Choice among per-item options (best of N continuations, pairwise preference).

The classes differ per item, so a confusion matrix has nothing to attach to. What does carry
over between items is *how* a voter chooses: how often it finds the right option, and whether
it leans toward the first option or the longest one (known habits of both tired humans and LLM
judges). Each voter v has three numbers θ_v = (a, b_pos, b_len):

    P(pick j | truth t) ∝ exp(a·[j = t] + b_pos·pos_j + b_len·len_j)

with pos_j = 1 for the first option falling to 0 for the last, and len_j the option's
log-length standardized within its item. A voter who always takes the longest answer gets a
large b_len and a small a, so its vote for the longest option is discounted — exactly on the
items where "longest" and "right" differ. θ is fitted by EM: posteriors over each item's
options (gold clamped), then a penalized maximum-likelihood step (L-BFGS, analytic gradient)
with a Gaussian prior pulling each voter toward its kind's mean, so a voter with few votes
borrows its kind's habits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from .errors import ConsensusInputError
from .votes import ABSTAIN, BoolArray, FloatArray, Gold, IntArray, VoterKinds

_NEG = -1e9


@dataclass(frozen=True)
class OptionItems:
    """Per item, its options' lengths (padded with NaN past ``n_options``)."""

    length: FloatArray

    def __post_init__(self) -> None:
        length = np.asarray(self.length, dtype=np.float64)
        if length.ndim != 2 or length.shape[1] < 2:
            raise ConsensusInputError("option lengths must be an (n_items, max_options) array")
        valid = ~np.isnan(length)
        if (valid.sum(axis=1) < 2).any() or (valid[:, 1:] & ~valid[:, :-1]).any():
            raise ConsensusInputError("every item needs ≥ 2 options, listed before the padding")
        if (length[valid] <= 0).any():
            raise ConsensusInputError("option lengths must be positive")
        object.__setattr__(self, "length", length)

    @property
    def valid(self) -> BoolArray:
        out: BoolArray = ~np.isnan(self.length)
        return out

    @property
    def n_options(self) -> IntArray:
        out: IntArray = self.valid.sum(axis=1).astype(np.int64)
        return out

    def features(self) -> tuple[FloatArray, FloatArray]:
        """(position, length) features, 0 on padding."""
        m = self.length.shape[1]
        last = np.maximum(self.n_options - 1, 1)[:, None]
        pos = np.where(self.valid, 1.0 - np.arange(m)[None, :] / last, 0.0)
        loglen = np.log(np.where(self.valid, self.length, 1.0))
        cnt = self.n_options[:, None]
        mean = np.where(self.valid, loglen, 0.0).sum(axis=1, keepdims=True) / cnt
        var = np.where(self.valid, (loglen - mean) ** 2, 0.0).sum(axis=1, keepdims=True) / cnt
        z = np.where(self.valid, (loglen - mean) / np.sqrt(var + 1e-12), 0.0)
        return pos, np.where(var > 1e-12, z, 0.0)


@dataclass(frozen=True)
class OptionVotes:
    item: IntArray
    voter: IntArray
    choice: IntArray  # option index, ABSTAIN to abstain
    n_items: int
    n_voters: int


class OptionsConsensus:
    """Posterior over each item's options; ``params_`` is (n_voters, 3): a, b_pos, b_len."""

    def __init__(
        self,
        *,
        prior_mean: tuple[float, float, float] = (1.5, 0.0, 0.0),
        prior_sd: float = 1.0,
        max_iter: int = 50,
        tol: float = 1e-5,
    ) -> None:
        if max_iter < 1:
            raise ConsensusInputError(f"max_iter must be at least 1, got {max_iter}")
        self.prior_mean = prior_mean
        self.prior_sd = prior_sd
        self.max_iter = max_iter
        self.tol = tol

    @staticmethod
    def _cast(items: OptionItems, votes: OptionVotes) -> tuple[IntArray, IntArray, IntArray]:
        cast = votes.choice != ABSTAIN
        item, voter, choice = votes.item[cast], votes.voter[cast], votes.choice[cast]
        if (choice < 0).any() or (choice >= items.n_options[item]).any():
            raise ConsensusInputError("a vote picks an option the item does not have")
        return item, voter, choice

    @staticmethod
    def _terms(
        theta: FloatArray,
        item: IntArray,
        voter: IntArray,
        choice: IntArray,
        pos: FloatArray,
        ln: FloatArray,
        valid: BoolArray,
    ) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
        """Per vote and candidate truth t: log P(choice | t), P(t | t), E[pos | t], E[len | t]."""
        a, bp, bl = theta[voter, 0:1], theta[voter, 1:2], theta[voter, 2:3]
        s = np.where(valid[item], bp * pos[item] + bl * ln[item], _NEG)
        es = np.exp(s - s.max(axis=1, keepdims=True))
        shift = s.max(axis=1, keepdims=True)
        total = es.sum(axis=1, keepdims=True)
        boost = es * np.expm1(a)
        z = total + boost  # normalizer for each candidate truth t (times e^-shift)
        rows = np.arange(item.shape[0])
        s_pick = s[rows, choice][:, None]
        hit = np.arange(s.shape[1])[None, :] == choice[:, None]
        logp = s_pick - shift + a * hit - np.log(z)
        p_tt = es * np.exp(a) / z
        e_pos = ((es * pos[item]).sum(axis=1, keepdims=True) + boost * pos[item]) / z
        e_len = ((es * ln[item]).sum(axis=1, keepdims=True) + boost * ln[item]) / z
        return logp, p_tt, e_pos, e_len

    def fit(
        self,
        items: OptionItems,
        votes: OptionVotes,
        gold: Gold | None = None,
        kinds: VoterKinds | None = None,
    ) -> OptionsConsensus:
        item, voter, choice = self._cast(items, votes)
        pos, ln = items.features()
        valid = items.valid
        n, m = valid.shape
        kinds = kinds if kinds is not None else VoterKinds.uniform(votes.n_voters)
        kind = kinds.kind[: votes.n_voters]
        theta = np.tile(np.array(self.prior_mean, dtype=np.float64), (votes.n_voters, 1))
        clamp = None
        if gold is not None and len(gold):
            gold.check(n, m)
            clamp = np.zeros((len(gold), m))
            clamp[np.arange(len(gold)), gold.label] = 1.0
        log_uniform = np.where(valid, 0.0, _NEG)
        last = -np.inf
        for n_iter in range(1, self.max_iter + 1):
            self.n_iter_ = n_iter
            logp = self._terms(theta, item, voter, choice, pos, ln, valid)[0]
            post = self._posterior(log_uniform, logp, item, n, m)
            if clamp is not None and gold is not None:
                post[gold.item] = clamp
            weight = post[item]
            counts = np.bincount(kind, minlength=len(kinds.names))
            mu = np.stack(
                [np.bincount(kind, theta[:, c], minlength=len(kinds.names)) for c in range(3)],
                axis=1,
            )
            mu = (mu + np.array(self.prior_mean)) / (counts + 1)[:, None]
            theta, objective = self._m_step(
                theta, mu[kind], weight, item, voter, choice, pos, ln, valid, votes.n_voters
            )
            if abs(objective - last) <= self.tol * abs(objective):
                break
            last = objective
        self.params_ = theta
        self.kind_params_ = mu
        self.kinds_ = kinds
        self.posteriors_ = post
        return self

    def _posterior(
        self, log_uniform: FloatArray, logp: FloatArray, item: IntArray, n: int, m: int
    ) -> FloatArray:
        ev = np.bincount(
            (item[:, None] * m + np.arange(m)).ravel(), logp.ravel(), minlength=n * m
        ).reshape(n, m)
        z = ev + log_uniform
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        out: FloatArray = p / p.sum(axis=1, keepdims=True)
        return out

    def _m_step(
        self,
        theta: FloatArray,
        mu: FloatArray,
        weight: FloatArray,
        item: IntArray,
        voter: IntArray,
        choice: IntArray,
        pos: FloatArray,
        ln: FloatArray,
        valid: BoolArray,
        n_voters: int,
    ) -> tuple[FloatArray, float]:
        pick_pos, pick_len = pos[item, choice][:, None], ln[item, choice][:, None]
        hit = np.arange(valid.shape[1])[None, :] == choice[:, None]
        var = self.prior_sd**2

        def objective(flat: FloatArray) -> tuple[float, FloatArray]:
            th = flat.reshape(n_voters, 3)
            logp, p_tt, e_pos, e_len = self._terms(th, item, voter, choice, pos, ln, valid)
            w = np.where(valid[item], weight, 0.0)
            value = float((w * logp).sum()) - float(((th - mu) ** 2).sum()) / (2 * var)
            per_vote = np.stack(
                [
                    (w * (hit - p_tt)).sum(axis=1),
                    (w * (pick_pos - e_pos)).sum(axis=1),
                    (w * (pick_len - e_len)).sum(axis=1),
                ],
                axis=1,
            )
            grad = (
                np.stack(
                    [np.bincount(voter, per_vote[:, c], minlength=n_voters) for c in range(3)],
                    axis=1,
                )
                - (th - mu) / var
            )
            return -value, -grad.ravel()

        # A few quasi-Newton steps per EM round (generalized EM): the posteriors move anyway.
        res = minimize(
            objective, theta.ravel(), jac=True, method="L-BFGS-B", options={"maxiter": 10}
        )
        return res.x.reshape(n_voters, 3), -float(res.fun)

    def predict_proba(
        self, items: OptionItems, votes: OptionVotes, kinds: VoterKinds | None = None
    ) -> FloatArray:
        """(n_items, max_options) posteriors, 0 on padding; unseen voters use their kind's θ."""
        if not hasattr(self, "params_"):
            raise ConsensusInputError("this OptionsConsensus is not fitted yet")
        item, voter, choice = self._cast(items, votes)
        theta = self.params_
        if votes.n_voters > theta.shape[0]:
            kind = (kinds or self.kinds_).kind[theta.shape[0] : votes.n_voters]
            theta = np.concatenate([theta, self.kind_params_[kind]])
        pos, ln = items.features()
        valid = items.valid
        logp = self._terms(theta, item, voter, choice, pos, ln, valid)[0]
        n, m = valid.shape
        return self._posterior(np.where(valid, 0.0, _NEG), logp, item, n, m)

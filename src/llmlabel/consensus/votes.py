"""The engine's input: integer-coded vote tables, gold and voter kinds.

Everything downstream is vectorized over votes, so the public types are plain arrays of codes;
string ids and labels are turned into codes once, here, where a bad record can still be named
by its item id. Constructors validate and coerce, so a model never sees an out-of-range code.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from .errors import ConsensusInputError

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

ABSTAIN = -1
DEFAULT_KINDS: tuple[str, ...] = ("human", "expert", "llm", "model")


def _codes(name: str, values: object, n: int | None = None) -> IntArray:
    arr = np.asarray(values)
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ConsensusInputError(f"{name} must hold integer codes, got dtype {arr.dtype}")
    arr = arr.astype(np.int64).reshape(-1)
    if n is not None and arr.shape != (n,):
        raise ConsensusInputError(f"{name} has {arr.shape[0]} entries, expected {n}")
    return arr


def _check_range(name: str, arr: IntArray, low: int, high: int) -> None:
    bad = (arr < low) | (arr >= high)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ConsensusInputError(
            f"{name}[{first}] = {int(arr[first])} is outside [{low}, {high - 1}]"
        )


@dataclass(frozen=True)
class Votes:
    """A long vote table: one row per vote; ``label == ABSTAIN`` is an abstention.

    ``confidence`` is the voter's stated confidence in [0, 1] (NaN when none was given).
    """

    item: IntArray
    voter: IntArray
    label: IntArray
    n_items: int
    n_voters: int
    n_classes: int
    confidence: FloatArray | None = None

    def __post_init__(self) -> None:
        item = _codes("votes.item", self.item)
        n = item.shape[0]
        voter = _codes("votes.voter", self.voter, n)
        label = _codes("votes.label", self.label, n)
        if self.n_classes < 2:
            raise ConsensusInputError(f"n_classes must be at least 2, got {self.n_classes}")
        _check_range("votes.item", item, 0, self.n_items)
        _check_range("votes.voter", voter, 0, self.n_voters)
        _check_range("votes.label", label, ABSTAIN, self.n_classes)
        if self.confidence is None:
            conf = np.full(n, np.nan)
        else:
            conf = np.asarray(self.confidence, dtype=np.float64).reshape(-1)
            if conf.shape != (n,):
                raise ConsensusInputError(
                    f"votes.confidence has {conf.shape[0]} entries, expected {n}"
                )
            bad = ~np.isnan(conf) & ((conf < 0) | (conf > 1))
            if bad.any():
                first = int(np.flatnonzero(bad)[0])
                raise ConsensusInputError(
                    f"votes.confidence[{first}] = {conf[first]} is outside [0, 1]"
                )
        object.__setattr__(self, "item", item)
        object.__setattr__(self, "voter", voter)
        object.__setattr__(self, "label", label)
        object.__setattr__(self, "confidence", conf)

    @property
    def conf(self) -> FloatArray:
        """Confidence as an array (never None after construction)."""
        assert self.confidence is not None
        return self.confidence

    def __len__(self) -> int:
        return int(self.item.shape[0])

    def subset(self, mask: BoolArray | IntArray) -> Votes:
        """The same table restricted to some rows; codes and sizes are kept."""
        return Votes(
            item=self.item[mask],
            voter=self.voter[mask],
            label=self.label[mask],
            n_items=self.n_items,
            n_voters=self.n_voters,
            n_classes=self.n_classes,
            confidence=self.conf[mask],
        )


@dataclass(frozen=True)
class Gold:
    """Known truth for some items; ``weight`` scales how much each counts when fitting."""

    item: IntArray
    label: IntArray
    weight: FloatArray | None = None

    def __post_init__(self) -> None:
        item = _codes("gold.item", self.item)
        label = _codes("gold.label", self.label, item.shape[0])
        if np.unique(item).shape[0] != item.shape[0]:
            raise ConsensusInputError("gold lists an item more than once")
        if (label < 0).any():
            raise ConsensusInputError("gold labels must be class codes, not abstentions")
        if self.weight is None:
            weight = np.ones(item.shape[0])
        else:
            weight = np.asarray(self.weight, dtype=np.float64).reshape(-1)
            if weight.shape != item.shape or (weight < 0).any() or np.isnan(weight).any():
                raise ConsensusInputError("gold.weight must be one non-negative number per item")
        object.__setattr__(self, "item", item)
        object.__setattr__(self, "label", label)
        object.__setattr__(self, "weight", weight)

    @property
    def w(self) -> FloatArray:
        assert self.weight is not None
        return self.weight

    def __len__(self) -> int:
        return int(self.item.shape[0])

    def check(self, n_items: int, n_classes: int) -> None:
        _check_range("gold.item", self.item, 0, n_items)
        _check_range("gold.label", self.label, 0, n_classes)

    def subset(self, mask: BoolArray | IntArray) -> Gold:
        return Gold(self.item[mask], self.label[mask], self.w[mask])


@dataclass(frozen=True)
class VoterKinds:
    """The kind of each voter (code into ``names``), which sets whom a voter is pooled with."""

    kind: IntArray
    names: tuple[str, ...] = DEFAULT_KINDS

    def __post_init__(self) -> None:
        kind = _codes("kinds.kind", self.kind)
        _check_range("kinds.kind", kind, 0, len(self.names))
        object.__setattr__(self, "kind", kind)

    @classmethod
    def uniform(cls, n_voters: int, name: str = "human") -> VoterKinds:
        names = DEFAULT_KINDS if name in DEFAULT_KINDS else (name,)
        return cls(np.full(n_voters, names.index(name), dtype=np.int64), names)

    def code(self, name: str) -> int:
        if name not in self.names:
            raise ConsensusInputError(f"voter kind '{name}' is not one of: {', '.join(self.names)}")
        return self.names.index(name)


@dataclass(frozen=True)
class EncodedVotes:
    """Coded votes plus the tables that map codes back to the caller's ids."""

    votes: Votes
    kinds: VoterKinds
    items: tuple[str, ...]
    voters: tuple[str, ...]
    classes: tuple[str, ...]

    def encode_gold(
        self, labels: Mapping[str, str], weights: Mapping[str, float] | None = None
    ) -> Gold:
        """Gold from item id → label; items never voted on are rejected (nothing to clamp)."""
        item_code = {name: i for i, name in enumerate(self.items)}
        class_code = {name: i for i, name in enumerate(self.classes)}
        items, codes, ws = [], [], []
        for item, label in labels.items():
            if str(item) not in item_code:
                raise ConsensusInputError(f"gold item '{item}' has no votes")
            if str(label) not in class_code:
                raise ConsensusInputError(
                    f"gold label '{label}' is not one of: {', '.join(self.classes)} (item '{item}')"
                )
            items.append(item_code[str(item)])
            codes.append(class_code[str(label)])
            ws.append(1.0 if weights is None else float(weights.get(item, 1.0)))
        return Gold(np.array(items, dtype=np.int64), np.array(codes, dtype=np.int64), np.array(ws))


def encode_votes(
    records: Iterable[Mapping[str, object]],
    classes: Sequence[str],
    *,
    voter_kinds: Mapping[str, str] | None = None,
    kind_names: Sequence[str] = DEFAULT_KINDS,
) -> EncodedVotes:
    """Code records ``{"item", "voter", "label", "confidence"?}``; a None label abstains.

    A record may carry ``"probs"`` (a mapping class → probability) instead of a label: its
    argmax becomes the label and its maximum the confidence, so a classifier's score enters the
    model through the same confidence bands as an LLM's stated confidence.
    """
    class_list = tuple(str(c) for c in classes)
    if len(set(class_list)) != len(class_list):
        raise ConsensusInputError("classes must be distinct")
    class_code = {c: i for i, c in enumerate(class_list)}
    item_code: dict[str, int] = {}
    voter_code: dict[str, int] = {}
    items: list[int] = []
    voters: list[int] = []
    labels: list[int] = []
    confs: list[float] = []
    for n, rec in enumerate(records):
        try:
            item, voter = str(rec["item"]), str(rec["voter"])
        except KeyError as exc:
            raise ConsensusInputError(f"vote record {n} has no {exc.args[0]!r}") from None
        label = rec.get("label")
        conf = rec.get("confidence")
        probs = rec.get("probs")
        if label is None and isinstance(probs, Mapping):
            best = max(probs, key=lambda c: float(probs[c]))
            label, conf = best, float(probs[best])
        if label is None:
            code = ABSTAIN
        elif str(label) in class_code:
            code = class_code[str(label)]
        else:
            raise ConsensusInputError(
                f"vote label '{label}' is not one of: {', '.join(class_list)} (item '{item}')"
            )
        c = math.nan if conf is None else float(conf)  # type: ignore[arg-type]
        if not math.isnan(c) and not 0.0 <= c <= 1.0:
            raise ConsensusInputError(
                f"vote confidence {c} is outside [0, 1] (item '{item}', voter '{voter}')"
            )
        items.append(item_code.setdefault(item, len(item_code)))
        voters.append(voter_code.setdefault(voter, len(voter_code)))
        labels.append(code)
        confs.append(c)
    kinds_tuple = tuple(kind_names)
    kind_code = {k: i for i, k in enumerate(kinds_tuple)}
    default_kind = kind_code.get("human", 0)
    kind = np.full(len(voter_code), default_kind, dtype=np.int64)
    for voter, name in (voter_kinds or {}).items():
        if voter not in voter_code:
            continue
        if name not in kind_code:
            raise ConsensusInputError(
                f"voter kind '{name}' is not one of: {', '.join(kinds_tuple)} (voter '{voter}')"
            )
        kind[voter_code[voter]] = kind_code[name]
    votes = Votes(
        item=np.array(items, dtype=np.int64),
        voter=np.array(voters, dtype=np.int64),
        label=np.array(labels, dtype=np.int64),
        n_items=len(item_code),
        n_voters=len(voter_code),
        n_classes=len(class_list),
        confidence=np.array(confs, dtype=np.float64),
    )
    return EncodedVotes(
        votes=votes,
        kinds=VoterKinds(kind, kinds_tuple),
        items=tuple(item_code),
        voters=tuple(voter_code),
        classes=class_list,
    )

import numpy as np
import pytest

from llmlabel.consensus import (
    ConsensusInputError,
    Decision,
    Policy,
    VoterKinds,
    Votes,
    decide,
    expected_information_gain,
    find_conflicts,
    votes_by_kind,
)

KINDS = ("human", "expert", "llm", "model")


def matrices(acc: dict[str, float], k: int = 2) -> np.ndarray:
    out = np.zeros((len(KINDS), k, k))
    for i, name in enumerate(KINDS):
        a = acc.get(name, 0.5)
        out[i] = (1 - a) / (k - 1)
        np.fill_diagonal(out[i], a)
    return out


M = matrices({"human": 0.9, "expert": 0.98, "llm": 0.8, "model": 0.6})


def counts(human: int = 0, expert: int = 0, llm: int = 0, model: int = 0) -> np.ndarray:
    return np.array([[human, expert, llm, model]])


def test_information_gain_by_hand():
    p = np.array([[0.5, 0.5]])
    gain = expected_information_gain(p, matrices({"human": 0.9}))[0, 0]
    h_binary = -(0.9 * np.log(0.9) + 0.1 * np.log(0.1))
    assert abs(gain - (np.log(2) - h_binary)) < 1e-12
    assert expected_information_gain(np.array([[1.0, 0.0]]), M).max() == 0.0


def test_finalize_when_target_and_humans_are_met():
    d = decide(np.array([[0.99, 0.01]]), counts(human=1), M, KINDS, Policy())
    assert d.code[0] == Decision.FINAL and d.label[0] == 0 and d.decided_by[0] == "consensus"
    assert d.next_kind[0] == -1


def test_machine_only_auto_accept_needs_min_human_zero():
    p = np.array([[0.995, 0.005]])
    waiting = decide(p, counts(llm=2), M, KINDS, Policy())
    assert waiting.code[0] == Decision.MORE
    assert KINDS[waiting.next_kind[0]] in ("human", "expert")
    auto = decide(p, counts(llm=2), M, KINDS, Policy(min_human_votes=0))
    assert auto.code[0] == Decision.FINAL and auto.decided_by[0] == "auto"


def test_cheap_llm_first_then_human_then_expert():
    p = np.array([[0.6, 0.4]])
    costs = {"llm": 0.01, "human": 1.0, "expert": 5.0, "model": 0.001}
    policy = Policy(costs=costs)
    everyone = np.array([[True, True, True, False]])
    assert KINDS[decide(p, counts(), M, KINDS, policy, available=everyone).next_kind[0]] == "llm"
    no_llm = np.array([[True, True, False, False]])
    assert KINDS[decide(p, counts(), M, KINDS, policy, available=no_llm).next_kind[0]] == "human"
    only_expert = np.array([[False, True, False, False]])
    d = decide(p, counts(), M, KINDS, policy, available=only_expert)
    assert KINDS[d.next_kind[0]] == "expert"
    nobody = np.zeros((1, 4), dtype=bool)
    d = decide(p, counts(), M, KINDS, policy, available=nobody)
    assert d.code[0] == Decision.ESCALATE and "no voter kind" in d.reason[0]


def test_escalate_on_budget_and_on_conflict():
    p = np.array([[0.6, 0.4], [0.6, 0.4]])
    c = np.array([[7, 0, 0, 0], [2, 0, 0, 0]])
    d = decide(p, c, M, KINDS, Policy(max_votes=7), conflict=np.array([False, True]))
    assert d.code.tolist() == [Decision.ESCALATE, Decision.ESCALATE]
    assert d.reason.tolist() == ["vote budget spent", "confident voters disagree"]


def test_availability_excludes_kinds_whose_voters_all_voted():
    from llmlabel.consensus import availability

    kinds = VoterKinds(np.array([0, 0, 2]))  # two humans, one LLM
    votes = Votes(np.array([0, 0, 1]), np.array([2, 0, 0]), np.array([1, -1, 0]), 3, 3, 2)
    assert availability(votes, kinds).tolist() == [
        [True, False, False, False],  # the LLM voted on item 0; one human abstained
        [True, False, True, False],
        [True, False, True, False],
    ]


def test_find_conflicts_and_counts_by_kind():
    votes = Votes(
        np.array([0, 0, 1, 1, 1]), np.array([0, 1, 0, 1, 2]), np.array([0, 1, 0, 1, -1]), 2, 3, 2
    )
    reliability = np.array([0.95, 0.97, 0.95, 0.5, np.nan])
    assert find_conflicts(votes, reliability, 0.9).tolist() == [True, False]
    kinds = VoterKinds(np.array([0, 2, 2]))
    assert votes_by_kind(votes, kinds).tolist() == [[1, 0, 1, 0], [1, 0, 1, 0]]


def test_policy_validates():
    with pytest.raises(ConsensusInputError):
        Policy(target=1.2)
    with pytest.raises(ConsensusInputError):
        Policy(costs={"llm": 0.0})

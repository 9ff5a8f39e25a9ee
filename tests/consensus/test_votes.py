import numpy as np
import pytest

from llmlabel.consensus import ABSTAIN, ConsensusInputError, Gold, Votes, encode_votes


def records():
    return [
        {"item": "r-1", "voter": "ann", "label": "positive"},
        {"item": "r-1", "voter": "gpt", "label": "negative", "confidence": 0.8},
        {"item": "r-2", "voter": "ann", "label": None},
        {"item": "r-2", "voter": "clf", "probs": {"positive": 0.3, "negative": 0.7}},
    ]


def test_encode_votes_codes_ids_labels_and_kinds():
    enc = encode_votes(records(), ["positive", "negative"], voter_kinds={"gpt": "llm"})
    v = enc.votes
    assert enc.items == ("r-1", "r-2")
    assert enc.voters == ("ann", "gpt", "clf")
    assert v.label.tolist() == [0, 1, ABSTAIN, 1]
    assert np.isnan(v.conf[0]) and v.conf[1] == 0.8 and v.conf[3] == 0.7
    assert [enc.kinds.names[k] for k in enc.kinds.kind] == ["human", "llm", "human"]
    gold = enc.encode_gold({"r-2": "negative"})
    assert gold.item.tolist() == [1] and gold.label.tolist() == [1]


def test_bad_label_is_named_with_its_item():
    bad = [{"item": "r-104", "voter": "a", "label": "postive"}]
    with pytest.raises(ConsensusInputError) as err:
        encode_votes(bad, ["positive", "negative"])
    assert str(err.value) == "vote label 'postive' is not one of: positive, negative (item 'r-104')"


def test_other_bad_input():
    with pytest.raises(ConsensusInputError, match=r"confidence 1\.5"):
        encode_votes([{"item": "a", "voter": "b", "label": "x", "confidence": 1.5}], ["x", "y"])
    with pytest.raises(ConsensusInputError, match="no 'voter'"):
        encode_votes([{"item": "a", "label": "x"}], ["x", "y"])
    with pytest.raises(ConsensusInputError, match="voter kind 'robot'"):
        encode_votes(records(), ["positive", "negative"], voter_kinds={"gpt": "robot"})
    enc = encode_votes(records(), ["positive", "negative"])
    with pytest.raises(ConsensusInputError, match="gold item 'r-9' has no votes"):
        enc.encode_gold({"r-9": "positive"})
    with pytest.raises(ConsensusInputError, match="gold label 'meh'"):
        enc.encode_gold({"r-1": "meh"})


def test_votes_validate_codes():
    with pytest.raises(ConsensusInputError, match=r"votes.label\[1\] = 2"):
        Votes(np.array([0, 0]), np.array([0, 1]), np.array([1, 2]), 1, 2, 2)
    with pytest.raises(ConsensusInputError, match="expected 2"):
        Votes(np.array([0, 0]), np.array([0]), np.array([1, 1]), 1, 2, 2)
    with pytest.raises(ConsensusInputError, match="more than once"):
        Gold(np.array([0, 0]), np.array([1, 1]))

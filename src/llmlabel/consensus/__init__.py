"""Consensus engine: pure numpy, arrays in and arrays out, no database.

Pipeline: ``encode_votes`` → ``DawidSkene.fit`` (reliability from gold + EM) →
``calibrate`` (held-out calibration, chosen repair, and for the policy the ``StoppingRule``
that makes a target hold where it stops) → ``decide`` (finalize / ask / escalate);
``run_consensus`` runs them in that order and returns a ``ConsensusResult``.
Other label types reuse the same core: ``MultiLabelConsensus`` (a binary model per label),
``TaxonomyConsensus`` (leaves, votes at any depth), ``OptionsConsensus`` (per-item options).
"""

from .calibration import (
    CalibrationReport,
    IsotonicCalibration,
    ReliabilityTable,
    TemperatureScaling,
    VoteCountIsotonic,
    VoteCountTemperature,
    bootstrap_ece,
    calibrate,
    cast_vote_counts,
    expected_calibration_error,
    reliability_table,
)
from .correlation import correlation_weights, error_phi
from .dawid_skene import Bands, DawidSkene
from .errors import ConsensusInputError
from .multilabel import MultiLabelConsensus, MultiLabelGold, MultiLabelVotes
from .options import OptionItems, OptionsConsensus, OptionVotes
from .policy import (
    Decision,
    Decisions,
    Policy,
    availability,
    decide,
    expected_information_gain,
    find_conflicts,
    votes_by_kind,
)
from .result import ConsensusResult, run_consensus
from .stopping import StoppingRule
from .taxonomy import Taxonomy, TaxonomyConsensus, TaxonomyVotes
from .votes import ABSTAIN, EncodedVotes, Gold, VoterKinds, Votes, encode_votes

__all__ = [
    "ABSTAIN",
    "Bands",
    "CalibrationReport",
    "ConsensusInputError",
    "ConsensusResult",
    "DawidSkene",
    "Decision",
    "Decisions",
    "EncodedVotes",
    "Gold",
    "IsotonicCalibration",
    "MultiLabelConsensus",
    "MultiLabelGold",
    "MultiLabelVotes",
    "OptionItems",
    "OptionVotes",
    "OptionsConsensus",
    "Policy",
    "ReliabilityTable",
    "StoppingRule",
    "Taxonomy",
    "TaxonomyConsensus",
    "TaxonomyVotes",
    "TemperatureScaling",
    "VoteCountIsotonic",
    "VoteCountTemperature",
    "VoterKinds",
    "Votes",
    "availability",
    "bootstrap_ece",
    "calibrate",
    "cast_vote_counts",
    "correlation_weights",
    "decide",
    "encode_votes",
    "error_phi",
    "expected_calibration_error",
    "expected_information_gain",
    "find_conflicts",
    "reliability_table",
    "run_consensus",
    "votes_by_kind",
]

"""Errors of the consensus engine.

The engine imports nothing of llmlabel but this error tree (plain Python, no I/O), so a bad
vote table surfaces in the CLI and the API like any other bad input, with its message.
"""

from __future__ import annotations

from llmlabel.errors import InputError


class ConsensusInputError(InputError, ValueError):
    """A vote table, gold set or option list that the engine cannot use, named precisely."""

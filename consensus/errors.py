"""Error tree of the consensus package; every error carries a stable ``code``."""


class ConsensusError(Exception):
    code = "consensus_error"


class MalformedMessage(ConsensusError):
    code = "malformed"


class BadSignature(ConsensusError):
    code = "bad_signature"


class UnknownValidator(ConsensusError):
    code = "unknown_validator"


class InvalidCommit(ConsensusError):
    code = "invalid_commit"


class InvalidEvidence(ConsensusError):
    code = "invalid_evidence"


class DoubleSignRefused(ConsensusError):
    """The signing guard refused to sign a message conflicting with one already signed."""

    code = "double_sign_refused"

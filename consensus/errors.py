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


class SigningStateCorrupt(ConsensusError):
    """The signing guard's file exists but cannot be read; signing stays refused until fixed."""

    code = "signing_state_corrupt"


class SigningStateLocked(ConsensusError):
    """Another process holds the signing guard's file: two signers for one key double-sign."""

    code = "signing_state_locked"

"""Error tree of the vm package; every error carries a stable ``code``."""


class VMError(Exception):
    code = "vm_error"


class InvalidBlock(VMError):
    """A block whose execution result disagrees with its header, or whose body breaks a rule."""

    code = "invalid_block"


class InvalidTransaction(VMError):
    code = "invalid_transaction"


class MalformedTransaction(InvalidTransaction):
    code = "malformed_transaction"


class InvalidGenesis(VMError):
    code = "invalid_genesis"


class BlockTooCostly(InvalidBlock):
    """A block whose deterministic execution cost exceeds ``max_block_cost`` (vm/cost.py)."""

    code = "block_cost_exceeded"

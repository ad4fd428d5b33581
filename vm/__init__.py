"""The state transition.

Owns: the block header format, chain parameters, py-evm state over any
key-value database, the system modules (precompiles at fixed addresses, see
:data:`vm.modules.SYSTEM_MODULES`) and block execution
(:func:`vm.execute.execute_block`).

Must not import: ``p2p``, ``consensus``, ``node`` (it may import the leaf ``codec``, whose
bounded decoders check headers and transaction envelopes). Callers hand it plain values
(the header, decoded transactions, attestation bytes, misbehaviour records).
"""

from vm.crypto import use_fast_keccak

use_fast_keccak()  # eth_hash (py-evm, trie) on the C Keccak backend: see vm/crypto.py

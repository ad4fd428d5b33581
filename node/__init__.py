"""The node process: config, CLI, chain store, mempool, attestation pool, block
builder, sync, JSON-RPC server, light client. ``node/node.py`` is the composition
root. May import ``consensus``, ``vm``, ``p2p``, ``genesis``."""

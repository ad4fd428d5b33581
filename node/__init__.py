"""The node daemon: config, chain store, mempool, attestation pool, block builder,
consensus driver, sync, the JSON-RPC server (``node.rpc``). ``node/node.py`` is the
composition root. May import ``consensus``, ``vm``, ``p2p``, ``genesis``, ``codec``;
never the programs built on it (``cli``, ``light``, ``devnet``). Inside, ``node.rpc``
sees the node only through :class:`node.rpc.nodeapi.NodeAPI` (docs/packages.md)."""

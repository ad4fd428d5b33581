"""The light client (docs/light.md): follows a Motus chain through any node's JSON-RPC and
verifies every answer it uses against validator signatures and Merkle proofs.

By its trust model it depends on no part of the node daemon: it imports only the
protocol's definitions (``codec``, ``consensus``, ``vm``, ``genesis``) and the JSON-RPC
client (``rpcclient``); ``tests/test_layering.py`` pins that.
"""

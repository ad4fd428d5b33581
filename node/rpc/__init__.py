"""JSON-RPC 2.0 over HTTP/1.1 and WebSocket on one port (docs/rpc.md).

Owns: the HTTP/WebSocket server (``server``, ``http``, ``websocket``), request
dispatch and limits (``dispatch``, ``ratelimit``), the method table other packages
extend (``registry``), the ``eth_``/``net_``/``web3_`` methods (``eth``), the
``motus_`` basics (``motus``), subscriptions (``subscriptions``), metrics
(``metrics``) and the client used by the CLI (``client``).

Handlers only read the chain store, the mempool and the application; they never
write the chain. Nothing here is imported by ``consensus``, ``vm`` or ``p2p``.
"""

"""The node's version, as clients see it (``web3_clientVersion``, ``motus_nodeInfo``)."""

VERSION = "0.1.0"
CLIENT_VERSION = f"Motus/v{VERSION}/python"

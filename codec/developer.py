"""The developer-facing wire formats, shared by the node and the SDK
(``rpcclient.sdk``) so both sides read them from one place:

- the exact text a telemetry read request is signed over (EIP-191 ``personal_sign``;
  docs/telemetry.md, "Signed read requests");
- the webhook signature header (docs/developers.md, "Webhooks": HMAC-SHA256 of
  ``"<ms>." + body`` under the webhook's secret).
"""

from __future__ import annotations

import hashlib
import hmac

NONCE_BYTES = 16  # a read request's nonce
SIGNATURE_HEADER = "X-Motus-Signature"
SIGNATURE_TOLERANCE_MS = 300_000  # a receiver accepts a signature this close to its clock


def request_message(chain_id: int, vehicle_id: int, from_ms: int, to_ms: int,
                    timestamp_ms: int, node_id: str, nonce: bytes) -> str:
    """The exact text a requester signs with EIP-191 (``personal_sign``)."""
    return (f"Motus telemetry request\nchain_id: {chain_id}\nnode_id: {node_id}\n"
            f"vehicle_id: {vehicle_id}\nfrom_ms: {from_ms}\nto_ms: {to_ms}\n"
            f"timestamp_ms: {timestamp_ms}\nnonce: 0x{nonce.hex()}")


def webhook_signature(secret: bytes, timestamp_ms: int, body: bytes) -> str:
    """The signature header's value: ``t=<ms>,v1=<hex HMAC-SHA256(secret, "<ms>." +
    body)>``."""
    mac = hmac.new(secret, str(timestamp_ms).encode() + b"." + body, hashlib.sha256)
    return f"t={timestamp_ms},v1={mac.hexdigest()}"


def verify_webhook_signature(secret: bytes, header: str | None, body: bytes, now_ms: int,
                             tolerance_ms: int = SIGNATURE_TOLERANCE_MS) -> bool:
    """Receiver side: ``header`` is a signature of exactly ``body`` under ``secret``,
    made within ``tolerance_ms`` of ``now_ms`` (an old delivery replayed by someone
    who captured it is refused)."""
    if not header:
        return False
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        timestamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    if abs(now_ms - timestamp) > tolerance_ms:
        return False
    return hmac.compare_digest(webhook_signature(secret, timestamp, body), header)

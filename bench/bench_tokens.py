"""Access-token verification throughput: tokens verified per second the way a node does it
for every read (``node.tokens.verify_token``: decode, recover the issuer, check it against
the validator set, then the vehicle's owner, permission generation and the license's
grant, all read from the head state) against raw coincurve
``PublicKey.from_signature_and_message`` on the same signatures, in the same run. Prints
both rates, the ratio and the load average.

Setup: a LocalChain with four validators (one is the issuing key), a license, and ``--vehicles``
vehicles whose owner granted the license the full template; one token per vehicle,
verified ``--rounds`` times each against one head-state view (as an RPC handler holds).

Run: ``python -m bench bench_tokens`` or ``python -m bench.bench_tokens [--vehicles N]
[--rounds R]``.
"""

from __future__ import annotations

import argparse
import os
import time

from coincurve import PublicKey

from consensus.crypto import address_of_private_key
from node.tokens import compute_token_digest, issue_token, sign_token_request, verify_token
from tests.harness import LocalChain, Module
from vm.modules import addresses
from vm.vin import with_check_digit

VALIDATOR_KEY = bytes.fromhex("11" * 32)
CHAIN_ID = 7077


def setup(vehicles: int) -> tuple[LocalChain, list[bytes]]:
    # four validators, as the devnet: the issuer is checked against the whole active set
    others = [(bytes([0xA0 + i]) * 20, 10) for i in range(3)]
    chain = LocalChain(validators=((address_of_private_key(VALIDATOR_KEY), 10), *others))
    lic = Module(chain, "licenses", addresses.LICENSES)
    ident = Module(chain, "identity", addresses.IDENTITY)
    developer, owner, signer = chain.accounts[2][1], chain.accounts[4][1], chain.accounts[5][1]
    lic.send(developer, "mintLicense", "Bench", "bench", [], "0x" + chain.accounts[5][0].hex(),
             value=100 * 10**18)
    ids = []
    for i in range(vehicles):
        vin = with_check_digit(f"1HGCM8263{i % 10}A{i:06d}")
        ident.send(owner, "mintVehicle", "Make", "Model", 2020, vin)
        ids.append(ident.call("vehicleIdByVin", ident.call("hashVin", vin)))
    far = chain.head.timestamp_ms // 1000 + 86_400
    ident.send(owner, "grantLicenseTemplate", ids, 1, 4, far, gas=30_000_000)
    now = chain.head.timestamp_ms
    state = chain.state()
    issuer = address_of_private_key(VALIDATOR_KEY)
    tokens = [issue_token(state, sign_token_request(signer, CHAIN_ID, issuer, 1, vid, now),
                          CHAIN_ID, VALIDATOR_KEY, now).encode() for vid in ids]
    return chain, tokens


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--vehicles", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=20)
    args, _ = ap.parse_known_args()
    chain, tokens = setup(args.vehicles)
    from node.tokens import decode_token

    work = [(t.signature, compute_token_digest(t)) for t in map(decode_token, tokens)]
    state = chain.state()
    now = chain.head.timestamp_ms
    n = len(tokens) * args.rounds

    # rounds alternate between the two so that load changes on the shared machine fall on both
    raw_s = full_s = 0.0
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        for signature, digest in work:
            PublicKey.from_signature_and_message(signature, digest, hasher=None)
        t1 = time.perf_counter()
        for raw in tokens:
            verify_token(state, raw, CHAIN_ID, "node", now)
        t2 = time.perf_counter()
        raw_s += t1 - t0
        full_s += t2 - t1

    raw_rate, full_rate = n / raw_s, n / full_s
    load = os.getloadavg()[0]
    print(f"tokens: {len(tokens)} x {args.rounds} rounds = {n} verifications")
    print(f"raw coincurve recovery: {raw_rate:,.0f}/s")
    print(f"token verification (signature + chain state): {full_rate:,.0f}/s")
    print(f"ratio verification/raw: {full_rate / raw_rate:.2f}   load average (1 min): {load:.2f}")


if __name__ == "__main__":
    main()

"""Running fuzz targets: one input checked against its target's contract, a mutator that
starts from the seeds, and the long campaign (atheris when installed, else the mutator).

The contract of every target, per input: only the decoder's documented errors escape;
the input takes at most ``MAX_SECONDS``; and, when measured, the Python heap's peak
during decoding is at most ``memory_bound(len(input))`` (a small multiple of the input:
pyrlp's nesting bombs cost hundreds of times their size).
"""

from __future__ import annotations

import random
import time
import tracemalloc

from tests.fuzz.targets import Target
from tests.security.bombs import wrap_list

MAX_SECONDS = 2.0  # per input; the largest seeds decode in milliseconds
MEMORY_FACTOR = 32  # json.loads makes ~20 bytes of objects per byte of "[[],[],...]"
MEMORY_SLACK = 4 * 1024 * 1024


def memory_bound(size: int) -> int:
    return MEMORY_FACTOR * size + MEMORY_SLACK


def check_one(target: Target, data: bytes, *, measure_memory: bool) -> None:
    """Decode ``data`` with ``target``; AssertionError if its contract is broken."""
    data = data[: target.max_bytes]
    if measure_memory:
        tracemalloc.start()
    started = time.perf_counter()
    try:
        target.decode(data)
    except target.errors:
        pass
    except Exception as exc:
        raise AssertionError(
            f"{target.name}: {type(exc).__name__}: {exc} escaped for input {data[:200].hex()}"
        ) from exc
    finally:
        elapsed = time.perf_counter() - started
        if measure_memory:
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
    assert elapsed <= MAX_SECONDS, f"{target.name}: {elapsed:.2f} s for {len(data)} bytes"
    if measure_memory:
        assert peak <= memory_bound(len(data)), (
            f"{target.name}: peak {peak} bytes for a {len(data)}-byte input {data[:200].hex()}")


# Byte strings that matter to the formats: RLP list/string prefixes, msgpack containers,
# JSON brackets and escapes.
_TOKENS = [b"\xc0", b"\xc1", b"\xf8\x38", b"\xf9\x01\x00", b"\x80", b"\x81\x00", b"\xb8\x38", b"\xbf",
           b"\x91", b"\x9f", b"\xdc\xff\xff", b"\xdd\x00\x01\x00\x00", b"\x81\xa1a", b"\xc4\x10", b"\xc0",
           b"[", b"]", b"{", b"}", b'"', b"\\", b'\\"', b",", b":", b"[" * 70, b"\xff" * 8]


def mutate(data: bytes, rng: random.Random, seeds: list[bytes]) -> bytes:
    """A few random edits of ``data``: flips, inserts of format tokens, deletions,
    duplicated chunks, splices with another seed, and wrapping a span in RLP lists."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        at = rng.randint(0, len(out))
        op = rng.randrange(7)
        if op == 0 and out:
            out[min(at, len(out) - 1)] = rng.randrange(256)
        elif op == 1:
            out[at:at] = rng.choice(_TOKENS)
        elif op == 2:
            del out[at : at + rng.randint(1, 16)]
        elif op == 3 and out:
            chunk = out[at : at + rng.randint(1, 64)]
            out[at:at] = chunk * rng.randint(1, 50)
        elif op == 4:
            other = rng.choice(seeds)
            cut = rng.randint(0, len(other))
            out[at:] = other[cut:]
        elif op == 5:
            out[at:at] = rng.randbytes(rng.randint(1, 8))
        else:
            end = rng.randint(at, len(out))
            span = bytes(out[at:end])
            for _ in range(rng.randint(1, 40)):
                span = wrap_list(span)
            out[at:end] = span
    return bytes(out)

"""Vehicle identification numbers (ISO 3779): normalisation, validation and the chain's
VIN hash (docs/identity.md, "VINs").

One implementation for the identity module (which refuses a bad VIN in the transaction,
so a wallet that bypasses the CLI gets the same answer) and for the CLI (which refuses it
before sending anything). Pure functions, no floats: consensus code.
"""

from __future__ import annotations

from vm.crypto import keccak256

VIN_LENGTH = 17
# ISO 3779: digits and capital letters except I, O and Q (read as 1 and 0)
VIN_ALPHABET = frozenset("0123456789ABCDEFGHJKLMNPRSTUVWXYZ")
VIN_HASH_DOMAIN = b"motus.vin.v1\x00"
# the first character is the WMI's region; 1-5 are North America, where the check digit
# at position 9 is mandatory (49 CFR 565.15)
CHECK_DIGIT_REGIONS = frozenset("12345")
_TRANSLITERATION = {
    **{str(d): d for d in range(10)},
    "A": 1, "B": 2, "C": 3, "D": 4, "E": 5, "F": 6, "G": 7, "H": 8,
    "J": 1, "K": 2, "L": 3, "M": 4, "N": 5, "P": 7, "R": 9,
    "S": 2, "T": 3, "U": 4, "V": 5, "W": 6, "X": 7, "Y": 8, "Z": 9,
}
_WEIGHTS = (8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2)
MAX_VIN_INPUT = 64  # characters looked at before refusing (a transaction's string can be huge)


class VinError(ValueError):
    """A VIN refused; ``code`` is always ``bad_vin``."""

    code = "bad_vin"

    def __init__(self, message: str) -> None:
        super().__init__(f"bad_vin: {message}")
        self.message = message


def check_digit(vin: str) -> str:
    """The North American check digit of a 17-character VIN of the ISO 3779 alphabet:
    the weighted sum of the transliterated characters modulo 11, ``X`` for 10."""
    total = sum(_TRANSLITERATION[c] * w for c, w in zip(vin, _WEIGHTS, strict=True))
    remainder = total % 11
    return "X" if remainder == 10 else str(remainder)


def with_check_digit(vin: str) -> str:
    """``vin`` (17 characters of the alphabet) with position 9 set to its check digit."""
    return vin[:8] + check_digit(vin) + vin[9:]


def normalize_vin(text: str) -> str:
    """The VIN in its one canonical form, or :class:`VinError`.

    Surrounding whitespace is removed and letters are upper-cased (a VIN has no lower
    case: ``1hgcm82633a004352`` is the same car as ``1HGCM82633A004352``); the result
    must be 17 characters of the ISO 3779 alphabet (no I, O or Q). When the first
    character says North America (1-5) the check digit at position 9 must be right;
    elsewhere it is optional (Europe's VINs often carry a letter or a zero there)."""
    if not isinstance(text, str):
        raise VinError("a VIN is a string")
    if len(text) > MAX_VIN_INPUT:
        raise VinError(f"{len(text)} characters; a VIN has {VIN_LENGTH}")
    vin = text.strip().upper()
    if len(vin) != VIN_LENGTH:
        raise VinError(f"{len(vin)} characters; a VIN has {VIN_LENGTH}")
    bad = sorted({c for c in vin if c not in VIN_ALPHABET})
    if bad:
        shown = ", ".join(repr(c) for c in bad)
        raise VinError(f"characters {shown} are not in a VIN (digits and A-Z without I, O, Q)")
    if vin[0] in CHECK_DIGIT_REGIONS and vin[8] != check_digit(vin):
        raise VinError(f"check digit {vin[8]!r} at position 9 should be {check_digit(vin)!r} "
                       "(North American VIN)")
    return vin


def vin_hash(vin: str) -> bytes:
    """The chain's key for a VIN: ``keccak256(b"motus.vin.v1\\x00" ++ ascii(normalised))``.
    Raises :class:`VinError` for a bad VIN."""
    return keccak256(VIN_HASH_DOMAIN + normalize_vin(vin).encode("ascii"))

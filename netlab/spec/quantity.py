"""Kubernetes resource quantities (`500m`, `128Mi`, `1G`, `1e3`), as apimachinery's
`resource.Quantity` parses, rounds and prints them.

A quantity is an exact number (kept here as a `Fraction`) and the format its suffix
chose: DecimalSI (`m`, `k`, `M`, `G`...), BinarySI (`Ki`, `Mi`, `Gi`...) or
DecimalExponent (`1e3`). Parsing keeps the value down to nano, rounding a finer
non-zero value away from zero (`0.9n` is `1n`), and caps a BinarySI value at 2^63-1;
`str()` prints the canonical form kube-apiserver and kubectl show (`1.5` -> `1500m`,
`1.5Gi` -> `1536Mi`, `1000M` -> `1G`). `cpu_millis` and `bytes_` round up, as
`MilliValue()` and `Value()` do: a container asking for `0.1m` cpu gets `1m`.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any

SPLIT_RE = r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"
# apimachinery's parse errors, word for word
FORMAT_WRONG = f"quantities must match the regular expression '{SPLIT_RE}'"
BAD_SUFFIX = "unable to parse quantity's suffix"

DECIMAL_SI, BINARY_SI, DECIMAL_EXPONENT = "DecimalSI", "BinarySI", "DecimalExponent"
DECIMAL_SUFFIXES = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15}
DECIMAL_SUFFIXES["E"] = 18
BINARY_SUFFIXES = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
MAX_BINARY = 2**63 - 1  # BinarySI quantities are capped here when parsed
NANO = 10**9
_SUFFIX_CHARS = "eEinumkKMGTP"
_DIGITS = "0123456789"


class QuantityError(ValueError):
    """A value that is not a Kubernetes quantity; the text is apimachinery's."""


@dataclass(frozen=True)
class Quantity:
    """An exact quantity and the format it prints in."""

    value: Fraction
    format: str = DECIMAL_SI

    def __str__(self) -> str:
        return canonical(self)

    @property
    def millis(self) -> int:
        """ceil(value * 1000), away from zero: `MilliValue()`."""
        return _round_up(self.value * 1000)

    @property
    def whole(self) -> int:
        """ceil(value), away from zero: `Value()`."""
        return _round_up(self.value)


def _round_up(value: Fraction) -> int:
    """Away from zero, as apimachinery's ScaledValue rounds."""
    whole = -(-abs(value.numerator) // value.denominator)
    return whole if value >= 0 else -whole


def _scan(text: str) -> tuple[bool, str, str, str]:
    """apimachinery's parseQuantityString: (positive, numerator, denominator, suffix)."""
    positive, pos, end = True, 0, len(text)
    if pos < end and text[0] in "+-":
        positive = text[0] == "+"
        pos += 1
    while pos < end and text[pos] == "0":  # leading zeros
        pos += 1
    if pos >= end:
        return positive, "0", "", ""
    start = pos
    while pos < end and text[pos] in _DIGITS:
        pos += 1
    num = text[start:pos] or "0"
    denom = ""
    if pos < end and text[pos] == ".":
        pos += 1
        start = pos
        while pos < end and text[pos] in _DIGITS:
            pos += 1
        denom = text[start:pos]
    suffix_start = pos
    while pos < end and text[pos] in _SUFFIX_CHARS:
        pos += 1
    if pos < end and text[pos] in "+-":
        pos += 1
    while pos < end and text[pos] in _DIGITS:
        pos += 1
    if pos < end:  # something after the suffix that is no exponent
        raise QuantityError(FORMAT_WRONG)
    return positive, num, denom, text[suffix_start:]


def _interpret(suffix: str) -> tuple[int, int, str]:
    """A suffix's (base, exponent, format)."""
    if suffix in DECIMAL_SUFFIXES:
        return 10, DECIMAL_SUFFIXES[suffix], DECIMAL_SI
    if suffix in BINARY_SUFFIXES:
        return 2, BINARY_SUFFIXES[suffix], BINARY_SI
    if len(suffix) > 1 and suffix[0] in "eE":
        try:
            return 10, int(suffix[1:], 10), DECIMAL_EXPONENT
        except ValueError:
            pass
    raise QuantityError(BAD_SUFFIX)


def parse_quantity(text: str) -> Quantity:
    """apimachinery's ParseQuantity: QuantityError (its message) if `text` is none."""
    if not text:
        raise QuantityError(FORMAT_WRONG)
    if text == "0":
        return Quantity(Fraction(0))
    positive, num, denom, suffix = _scan(text)
    base, exponent, form = _interpret(suffix)
    value = Fraction(int(num + denom), 10 ** len(denom)) * Fraction(base) ** exponent
    if value and (value * NANO).denominator != 1:  # finer than nano: up, to the next nano
        value = Fraction(_round_up(value * NANO), NANO)
    if form == BINARY_SI:
        value = min(value, Fraction(MAX_BINARY))
        if 0 < value < 1:
            form = DECIMAL_SI
    return Quantity(value if positive else -value, form)


def quantity_of(value: Any) -> Quantity:
    """A quantity as a manifest gives it, a string or a JSON number (`cpu: 1`, `cpu:
    0.5`), surrounding spaces ignored as kube-apiserver's JSON decoding ignores them."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise QuantityError(FORMAT_WRONG)
    return parse_quantity(value.strip() if isinstance(value, str) else str(value))


def cpu_millis(quantity: Quantity | str | int | float) -> int:
    """Millicores, rounded up to whole ones (`0.1m` -> 1), as kubelet and the scheduler
    read cpu (MilliValue)."""
    return _quantity(quantity).millis


def bytes_(quantity: Quantity | str | int | float) -> int:
    """Bytes, rounded up to whole ones, as kubelet reads memory (Value)."""
    return _quantity(quantity).whole


def _quantity(value: Quantity | str | int | float) -> Quantity:
    return value if isinstance(value, Quantity) else quantity_of(value)


def canonical(quantity: Quantity) -> str:
    """The canonical text (Quantity.String): no fraction, the largest suffix that
    loses nothing; BinarySI falls back to DecimalSI below 1024 or for a fraction."""
    value, form = quantity.value, quantity.format
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    if form == BINARY_SI and (abs(value) < 1024 or value.denominator != 1):
        form = DECIMAL_SI
    if form == BINARY_SI:
        mantissa, exponent = abs(value.numerator), 0
        while mantissa % 1024 == 0 and exponent < 60:
            mantissa, exponent = mantissa // 1024, exponent + 10
        return f"{sign}{mantissa}{_binary_suffix(exponent)}"
    scaled = abs(value) * NANO  # parsed quantities are whole nanos
    mantissa, exponent = _round_up(scaled), -9
    while mantissa % 10 == 0:
        mantissa, exponent = mantissa // 10, exponent + 1
    while exponent % 3:  # down to a multiple of 3 (Python's % is Go's floor here)
        mantissa, exponent = mantissa * 10, exponent - 1
    if form == DECIMAL_SI and exponent in DECIMAL_SUFFIXES.values():
        suffix = next(s for s, e in DECIMAL_SUFFIXES.items() if e == exponent)
    else:  # DecimalExponent, or beyond E (10^18): "e21"
        suffix = f"e{exponent}" if exponent else ""
    return f"{sign}{mantissa}{suffix}"


def _binary_suffix(exponent: int) -> str:
    return next((s for s, e in BINARY_SUFFIXES.items() if e == exponent), "")


def format_cpu(millis: int) -> str:
    """Millicores as Kubernetes prints cpu: `250m`, `2`, `1500m`."""
    return canonical(Quantity(Fraction(millis, 1000), DECIMAL_SI))


def format_memory(count: int) -> str:
    """Bytes as kubelet prints memory (BinarySI): `128Mi`, `1Gi`, `1000000000`."""
    return canonical(Quantity(Fraction(count), BINARY_SI))


def fix_for(text: Any) -> str:
    """How to write a quantity someone got wrong: the common slips named."""
    general = "write e.g. 500m or 0.5 (cpu), 128Mi or 1G (memory)"
    if not isinstance(text, str):
        return general
    number = text.strip().rstrip("Bb")
    if number != text.strip() and number and number[-1] in "kKMGTPEi":
        digits, letter = number.removesuffix("i")[:-1], number.removesuffix("i")[-1].upper()
        decimal = "k" if letter == "K" else letter
        return f"drop the B: write {digits}{decimal} (powers of 10) or {digits}{letter}i (of 2)"
    for suffix in BINARY_SUFFIXES:
        if number.lower().endswith(suffix.lower()) and not number.endswith(suffix):
            return f"binary suffixes are written {suffix}, e.g. 128{suffix}"
    if number.endswith("K"):
        return "write k (10^3) or Ki (2^10); Kubernetes has no K"
    return general

"""Kubernetes quantities, against apimachinery's own tables (pkg/api/resource
quantity_test.go): parsing, rounding, formats and the canonical text."""

from __future__ import annotations

from fractions import Fraction

import pytest

from netlab.spec.quantity import (
    BAD_SUFFIX,
    BINARY_SI,
    DECIMAL_EXPONENT,
    DECIMAL_SI,
    FORMAT_WRONG,
    MAX_BINARY,
    QuantityError,
    bytes_,
    cpu_millis,
    fix_for,
    format_cpu,
    format_memory,
    parse_quantity,
    quantity_of,
)

KI, MI, GI, TI = 2**10, 2**20, 2**30, 2**40


# (text, value, format): TestQuantityParse
@pytest.mark.parametrize(
    "text, value, form",
    [
        ("0", 0, DECIMAL_SI),
        ("0n", 0, DECIMAL_SI),
        ("0Ki", 0, BINARY_SI),
        ("0Mi", 0, BINARY_SI),
        ("0T", 0, DECIMAL_SI),
        ("1", 1, DECIMAL_SI),
        ("1Ki", KI, BINARY_SI),
        ("8Ki", 8 * KI, BINARY_SI),
        ("7Mi", 7 * MI, BINARY_SI),
        ("6Gi", 6 * GI, BINARY_SI),
        ("5Ti", 5 * TI, BINARY_SI),
        ("3Ei", 3 * 2**60, BINARY_SI),
        ("5n", Fraction(5, 10**9), DECIMAL_SI),
        ("4u", Fraction(4, 10**6), DECIMAL_SI),
        ("3m", Fraction(3, 1000), DECIMAL_SI),
        ("50k", 50_000, DECIMAL_SI),
        ("7M", 7 * 10**6, DECIMAL_SI),
        ("6G", 6 * 10**9, DECIMAL_SI),
        ("2P", 2 * 10**15, DECIMAL_SI),
        ("1E", 10**18, DECIMAL_SI),
        ("12E", 12 * 10**18, DECIMAL_SI),
        ("1E-3", Fraction(1, 1000), DECIMAL_EXPONENT),
        ("1e3", 1000, DECIMAL_EXPONENT),
        ("1E18", 10**18, DECIMAL_EXPONENT),
        ("100.035k", 100_035, DECIMAL_SI),
        ("0.001", Fraction(1, 1000), DECIMAL_SI),
        ("0.0005k", Fraction(1, 2), DECIMAL_SI),
        ("0.5e-2", Fraction(5, 1000), DECIMAL_EXPONENT),
        ("1.3E+6", 1_300_000, DECIMAL_EXPONENT),
        ("7.123456M", 7_123_456, DECIMAL_SI),
        ("1.01E", 101 * 10**16, DECIMAL_SI),
        # finer than nano rounds up, away from zero
        ("3.001n", Fraction(4, 10**9), DECIMAL_SI),
        ("1.1E-9", Fraction(2, 10**9), DECIMAL_EXPONENT),
        ("0.0000000001", Fraction(1, 10**9), DECIMAL_SI),
        ("0.9n", Fraction(1, 10**9), DECIMAL_SI),
        ("0.00000012345", Fraction(124, 10**9), DECIMAL_SI),
        # a BinarySI quantity is capped at 2^63-1
        ("9Ei", MAX_BINARY, BINARY_SI),
        ("9223372036854775807Ki", MAX_BINARY, BINARY_SI),
        # fractional binary
        ("100.035Ki", Fraction(10243584, 100), BINARY_SI),
        ("0.5Mi", MI // 2, BINARY_SI),
        ("0.025Ti", Fraction(274877906944, 10), BINARY_SI),
        # "things written by trolls"
        ("0.000000000001Ki", Fraction(2, 10**9), DECIMAL_SI),  # rounds up, changes format
        (".001", Fraction(1, 1000), DECIMAL_SI),
        ("1.", 1, DECIMAL_SI),
        ("1.G", 10**9, DECIMAL_SI),
    ],
)
def test_parse(text, value, form):
    quantity = parse_quantity(text)
    assert (quantity.value, quantity.format) == (value, form)
    negative = parse_quantity("-" + text)
    assert (negative.value, negative.format) == (-quantity.value, form)
    assert parse_quantity("+" + text) == quantity


@pytest.mark.parametrize(
    "text, error",
    [
        ("", FORMAT_WRONG),
        ("1.1.M", FORMAT_WRONG),
        ("1+1.0M", FORMAT_WRONG),
        ("0.1am", FORMAT_WRONG),
        ("aoeu", FORMAT_WRONG),
        (" 1", FORMAT_WRONG),  # ParseQuantity takes no spaces (the JSON decoder trims them)
        ("1 ", FORMAT_WRONG),
        ("1GB", FORMAT_WRONG),
        ("0.1mi", BAD_SUFFIX),
        (".5i", BAD_SUFFIX),
        ("1i", BAD_SUFFIX),
        ("-3.01i", BAD_SUFFIX),
        ("-3.01e-", BAD_SUFFIX),
        ("1K", BAD_SUFFIX),
    ],
)
def test_invalid(text, error):
    with pytest.raises(QuantityError) as info:
        parse_quantity(text)
    assert str(info.value) == error


def test_the_format_error_is_apimachinerys():
    assert FORMAT_WRONG == (
        "quantities must match the regular expression "
        "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
    )


# (text, canonical): TestQuantityString's alternates and TestQuantityParseEmit
@pytest.mark.parametrize(
    "text, canonical",
    [
        ("1024Mi", "1Gi"),
        ("307200Ki", "300Mi"),
        ("1025024Mi", "1001Gi"),
        ("1024Gi", "1Ti"),
        ("5000m", "5"),
        ("0.5", "500m"),
        ("1000M", "1G"),
        ("0.001T", "1G"),
        ("1000u", "1m"),
        ("1.08", "1080m"),
        ("1080000000n", "1080m"),
        ("1000E", "1e21"),  # no suffix beyond E: exponent notation
        ("5000E", "5e21"),
        (".001e12", "1e9"),
        ("0.001e0", "1e-3"),
        ("1000e-12", "1e-9"),
        ("00", "0"),
        ("1Ki", "1Ki"),
        ("1.5Gi", "1536Mi"),
        ("1.5", "1500m"),
        (".001Ki", "1024m"),
        (".000001Ki", "1024u"),
        (".000000001Ki", "1024n"),
        (".000000000001Ki", "2n"),
        ("1025Ki", "1025Ki"),
        ("1.3E+6", "1300e3"),
        ("250m", "250m"),
        ("128Mi", "128Mi"),
        ("1G", "1G"),
        ("9Ei", "9223372036854775807"),
        ("0.5Ki", "512"),  # BinarySI below 1024 prints as DecimalSI
        ("-1.5Gi", "-1536Mi"),
        ("-0.5", "-500m"),
    ],
)
def test_canonical(text, canonical):
    assert str(parse_quantity(text)) == canonical
    assert str(parse_quantity(canonical)) == canonical  # canonical text is a fixed point


@pytest.mark.parametrize(
    "value, millis, whole",
    [
        ("500m", 500, 1),
        ("0.1m", 1, 1),  # rounded up to 1m, as MilliValue does
        ("1", 1000, 1),
        ("1.5", 1500, 2),
        ("100u", 1, 1),
        ("128Mi", 128 * MI * 1000, 128 * MI),
        ("1.5", 1500, 2),
        ("0", 0, 0),
        (2, 2000, 2),  # JSON numbers, as kube-apiserver decodes them
        (0.25, 250, 1),
        (1e-05, 1, 1),
        (1e16, 10**19, 10**16),
        ("  250m ", 250, 1),
    ],
)
def test_millis_and_bytes(value, millis, whole):
    assert cpu_millis(value) == millis
    assert bytes_(value) == whole


@pytest.mark.parametrize("value", [True, None, [1], {"cpu": 1}, float("nan")])
def test_non_quantities(value):
    with pytest.raises(QuantityError):
        quantity_of(value)


@pytest.mark.parametrize(
    "millis, text", [(250, "250m"), (1000, "1"), (1500, "1500m"), (0, "0"), (2000, "2")]
)
def test_format_cpu(millis, text):
    assert format_cpu(millis) == text


@pytest.mark.parametrize(
    "count, text",
    [(128 * MI, "128Mi"), (GI, "1Gi"), (10**9, "1000000000"), (512, "512"), (1536 * MI, "1536Mi")],
)
def test_format_memory(count, text):
    assert format_memory(count) == text


@pytest.mark.parametrize(
    "text, fix",
    [
        ("1GB", "drop the B: write 1G (powers of 10) or 1Gi"),
        ("512MiB", "drop the B: write 512M (powers of 10) or 512Mi"),
        ("1gi", "binary suffixes are written Gi"),
        ("1K", "write k (10^3) or Ki (2^10)"),
        ("lots", "write e.g. 500m or 0.5 (cpu), 128Mi or 1G (memory)"),
    ],
)
def test_fix_names_the_slip(text, fix):
    assert fix in fix_for(text)

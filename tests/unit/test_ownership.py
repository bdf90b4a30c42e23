"""Cleanup removes exactly what a lab owns: table tests of the naming rule."""

import pytest

from netlab.realize.cleanup import owned


@pytest.mark.parametrize(
    "name,lab_prefix,expected",
    [
        ("nl-demo", "nl-demo", True),
        ("nl-demo.web-0", "nl-demo", True),
        ("nl-demo:n1", "nl-demo", True),
        ("nl-demo-x", "nl-demo", False),  # lab "demo-x" is another lab
        ("nl-demo-x.web", "nl-demo", False),
        ("nl-demo2:n1", "nl-demo", False),
        ("demo", "nl-demo", False),
    ],
)
def test_owned(name, lab_prefix, expected):
    assert owned(name, lab_prefix) is expected

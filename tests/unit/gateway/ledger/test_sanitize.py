from __future__ import annotations

import math

from gateway.ledger import sanitize


def test_values_the_stores_refuse_are_made_storable() -> None:
    assert sanitize.text("gpt\x00-4") == "gpt\ufffd-4"
    assert sanitize.text("caf\u00e9\x00") == "caf\u00e9\ufffd"
    assert sanitize.text("lone \ud800 surrogate").encode() == b"lone ? surrogate"
    assert sanitize.value(2**70) == 2**63 - 1 and sanitize.value(-(2**70)) == -(2**63)
    assert sanitize.value(math.nan) is None and sanitize.value(math.inf) is None
    assert sanitize.value(b"\x00\xff") == "\ufffd\ufffd"
    assert sanitize.value(True) is True and sanitize.value(None) is None


def test_a_clean_row_is_returned_as_is() -> None:
    clean = ("req", 1.5, 3, None)
    assert sanitize.row(clean) is clean
    assert sanitize.row(("a\x00", 1)) == ("a\ufffd", 1)
    assert sanitize.row(("caf\u00e9", 2**64)) == ("caf\u00e9", 2**63 - 1)

"""ofa_sdk.budget: latency budgets from numbers and strings with units."""

from __future__ import annotations

import pytest

from ofa_sdk.budget import parse_budget
from ofa_sdk.errors import BudgetError, OfaError


@pytest.mark.parametrize("text", ["20ms", "20 ms", "0.02s", "20", " 20MS ", "2e1ms", "20000us",
                                  20, 20.0, "20.0 ms"])
def test_twenty_milliseconds(text):
    assert parse_budget(text) == 20.0


def test_units_and_fractions():
    assert parse_budget("0.5") == 0.5
    assert parse_budget("1.5 s") == 1500.0
    assert parse_budget("250us") == 0.25
    assert parse_budget(".5ms") == 0.5


@pytest.mark.parametrize("bad", ["", "abc", "20 min", "ms", "20ms5", "1,5ms", "-5ms", "0", "0s",
                                 "-0.0", "nan", "inf", float("nan"), float("inf"), -1, 0, True,
                                 None, [20]])
def test_bad_budgets_raise_budget_error(bad):
    with pytest.raises(BudgetError) as info:
        parse_budget(bad)
    err = info.value
    assert isinstance(err, OfaError) and isinstance(err, ValueError) and err.exit_code == 2
    assert "budget" in str(err)


def test_non_positive_message_says_so():
    with pytest.raises(BudgetError, match="positive"):
        parse_budget("-5ms")
    with pytest.raises(BudgetError, match="cannot parse"):
        parse_budget("twenty")

"""DNS SRV selection (RFC 2782 "Usage rules", RFC 6120 §3.2.1): pure, with the draw fixed."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from pairing.errors import ServerUnreachable
from pairing.protocol.address import ServerAddress
from pairing.protocol.srv import ServiceNotOffered, SRVRecord, client_addresses, order


def srv(priority: int, weight: int, target: str, port: int = 5222) -> SRVRecord:
    return SRVRecord(priority, weight, port, target)


class Draws:
    """Returns the given numbers in turn and records the upper bounds it was asked for."""

    def __init__(self, *values: int) -> None:
        self.values = list(values)
        self.bounds: list[int] = []

    def __call__(self, upper: int) -> int:
        self.bounds.append(upper)
        return self.values.pop(0)


def test_lower_priority_comes_first_whatever_the_weights() -> None:
    records = [srv(20, 1000, "c"), srv(10, 0, "b"), srv(5, 1, "a")]
    assert [r.target for r in order(records, lambda upper: upper)] == ["a", "b", "c"]


def test_weighted_pick_uses_running_sums_with_zero_weights_first() -> None:
    """RFC 2782: weight-0 records first, running sums, the first sum >= the random number."""
    records = [srv(0, 10, "ten"), srv(0, 20, "twenty"), srv(0, 0, "zero")]
    # Running sums in pick order: zero 0, ten 10, twenty 30.
    draws = Draws(11, 0, 0)  # 11 -> twenty (sum 30); then zero (sum 0); then ten alone
    assert [r.target for r in order(records, draws)] == ["twenty", "zero", "ten"]
    assert draws.bounds == [30, 10, 10]  # the sum of the weights still to pick, inclusive

    draws = Draws(0, 1, 0)  # 0 -> zero; 1 -> ten (sum 10); then twenty
    assert [r.target for r in order(records, draws)] == ["zero", "ten", "twenty"]

    draws = Draws(10, 20, 0)  # 10 -> ten (sum 10 >= 10); 20 -> twenty (sum 20); then zero
    assert [r.target for r in order(records, draws)] == ["ten", "twenty", "zero"]
    assert draws.bounds == [30, 20, 0]


def test_each_priority_is_ordered_on_its_own() -> None:
    records = [srv(1, 1, "b1"), srv(0, 1, "a1"), srv(1, 3, "b2"), srv(0, 1, "a2")]
    draws = Draws(2, 0, 4, 0)  # priority 0: 2 -> a2 (sum 2); then a1. priority 1: 4 -> b2
    assert [r.target for r in order(records, draws)] == ["a2", "a1", "b2", "b1"]
    assert draws.bounds == [2, 1, 4, 1]


def test_weights_share_the_first_pick_in_proportion() -> None:
    """Over many orderings the first pick follows the weights (a fixed seed: no flakiness)."""
    rng = random.Random(20251203)
    records = [srv(0, 1, "one"), srv(0, 3, "three"), srv(0, 0, "zero")]
    firsts = Counter(
        order(records, lambda upper: rng.randint(0, upper))[0].target for _ in range(20000)
    )
    # Expected shares: zero 1/5 (draw 0 of 0..4), one 1/5, three 3/5.
    assert firsts["three"] / 20000 == pytest.approx(0.6, abs=0.02)
    assert firsts["one"] / 20000 == pytest.approx(0.2, abs=0.02)
    assert firsts["zero"] / 20000 == pytest.approx(0.2, abs=0.02)


def test_a_heavy_record_beats_a_weightless_one_almost_always() -> None:
    rng = random.Random(7)
    records = [srv(0, 0, "zero"), srv(0, 100, "heavy")]
    firsts = Counter(
        order(records, lambda upper: rng.randint(0, upper))[0].target for _ in range(10000)
    )
    assert firsts["zero"] / 10000 == pytest.approx(1 / 101, abs=0.005)


def test_all_weights_zero_keeps_every_record() -> None:
    records = [srv(0, 0, "a"), srv(0, 0, "b"), srv(0, 0, "c")]
    assert sorted(r.target for r in order(records, lambda upper: 0)) == ["a", "b", "c"]


def test_a_draw_outside_its_range_is_a_bug_not_a_choice() -> None:
    with pytest.raises(ValueError, match="outside"):
        order([srv(0, 1, "a"), srv(0, 1, "b")], lambda upper: upper + 1)


def test_addresses_in_order_without_the_trailing_dot() -> None:
    records = [srv(10, 0, "backup.example.org.", 5223), srv(0, 0, "xmpp.example.org.")]
    assert client_addresses(records, lambda upper: 0) == [
        ServerAddress("xmpp.example.org", 5222),
        ServerAddress("backup.example.org", 5223),
    ]


def test_a_single_dot_target_means_no_service_and_no_fallback() -> None:
    with pytest.raises(ServiceNotOffered) as caught:
        client_addresses([srv(0, 0, ".", 0)])
    assert isinstance(caught.value, ServerUnreachable)  # the CLIs' exit status 3


def test_records_that_cannot_be_dialled_are_left_out() -> None:
    records = [srv(0, 0, ".", 0), srv(1, 0, "xmpp.example.org"), srv(2, 0, "zero-port", 0)]
    assert client_addresses(records) == [ServerAddress("xmpp.example.org", 5222)]


@pytest.mark.parametrize(("priority", "weight", "port"), [(-1, 0, 1), (0, 65536, 1), (0, 0, 70000)])
def test_values_outside_sixteen_bits_are_refused(priority: int, weight: int, port: int) -> None:
    with pytest.raises(ValueError, match="0-65535"):
        SRVRecord(priority, weight, port, "x")

import random

import pytest

from recall_circuits.errors import RecallCircuitsError
from recall_circuits.training.intervals import accuracy_interval, gap_interval


def _slow_bootstrap(tables, n_draws, seed_people):
    """The obvious loop: draw people with replacement, recompute each table's accuracy, take the difference."""
    rng = random.Random(seed_people)
    people = sorted(tables[0])
    out = []
    for _ in range(n_draws):
        draw = [rng.choice(people) for _ in people]
        accs = [sum(t[p][0] for p in draw) / sum(t[p][1] for p in draw) for t in tables]
        out.append(accs[0] - (accs[1] if len(accs) > 1 else 0.0))
    out.sort()
    return out[int(0.025 * n_draws)], out[int(0.975 * n_draws) - 1]


def test_point_values_and_intervals_agree_with_a_slow_bootstrap():
    rng = random.Random(0)
    a = {str(i): [rng.randint(0, 6), 6] for i in range(40)}
    b = {str(i): [rng.randint(0, 3), 6] for i in range(40)}
    acc = accuracy_interval(a, n_draws=4000)
    assert acc.value == pytest.approx(sum(v[0] for v in a.values()) / 240)
    lo, hi = _slow_bootstrap([a], 4000, 1)
    assert acc.low == pytest.approx(lo, abs=0.02) and acc.high == pytest.approx(hi, abs=0.02)
    gap = gap_interval(a, b, n_draws=4000)
    assert gap.value == pytest.approx(acc.value - sum(v[0] for v in b.values()) / 240)
    lo, hi = _slow_bootstrap([a, b], 4000, 2)
    assert gap.low == pytest.approx(lo, abs=0.02) and gap.high == pytest.approx(hi, abs=0.02)
    assert gap.low < gap.value < gap.high


def test_identical_people_give_a_zero_width_interval_and_pairing_matters():
    same = {str(i): [3, 6] for i in range(10)}
    assert accuracy_interval(same).low == accuracy_interval(same).high == 0.5
    # a model equal to the other plus one question right for every person: paired gap is exactly 1/6
    a = {str(i): [i % 7, 6] for i in range(30) if i % 7 < 6}
    b = {k: [v[0] + 1, 6] for k, v in a.items()}
    g = gap_interval(b, a)
    assert g.low == pytest.approx(1 / 6) and g.high == pytest.approx(1 / 6)


def test_bad_input_is_an_error():
    with pytest.raises(RecallCircuitsError, match="different people"):
        gap_interval({"0": [1, 1]}, {"1": [1, 1]})
    with pytest.raises(RecallCircuitsError, match="n_draws"):
        accuracy_interval({"0": [1, 1]}, n_draws=5)

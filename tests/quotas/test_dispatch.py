"""The pure dispatch decision: weighted round robin under budgets, no head-of-line blocking."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from quotas.dispatch import Head, TenantTurn, allocate


def _turn(tenant: str, weight: int, lanes: dict[str, int], start: int = 0) -> TenantTurn:
    heads, n = [], start
    for lane, count in lanes.items():
        for _ in range(count):
            n += 1
            heads.append(Head(n, 0, (tenant, lane, 0)))
    return TenantTurn(tenant, weight, heads)


def test_round_robin_by_weight_in_visiting_order():
    a = _turn("a", 2, {"x": 10})
    b = _turn("b", 1, {"x": 10}, start=100)
    choice = allocate([b, a], max_jobs=6, lane_budgets={}, budgets={})
    tenants = ["a" if j < 100 else "b" for j in choice.job_ids]
    assert tenants == ["b", "a", "a", "b", "a", "a"]
    assert [(x.tenant, x.to_back, x.turn_taken) for x in choice.served] == [
        ("b", True, 0), ("a", True, 0)]


def test_a_turn_spans_claims_so_weights_hold_one_job_at_a_time():
    """DRR's deficit: with max_jobs=1 a weight-3 tenant keeps the front for 3 claims."""
    taken = {"a": 0, "b": 0}
    order = ["a", "b"]
    got = []
    for _ in range(8):
        turns = [_turn(t, 3 if t == "a" else 1, {"x": 5}, start=0 if t == "a" else 100)
                 for t in order]
        for turn in turns:
            turn.credit = turn.weight - taken[turn.tenant]
        choice = allocate(turns, max_jobs=1, lane_budgets={}, budgets={})
        (served,) = choice.served
        got.append(served.tenant)
        taken[served.tenant] = served.turn_taken
        if served.to_back:
            order.remove(served.tenant)
            order.append(served.tenant)
    assert got == ["a", "a", "a", "b", "a", "a", "a", "b"]


def test_a_lane_without_budget_is_skipped_not_waited_on():
    a = _turn("a", 5, {"capped": 3, "free": 2})
    choice = allocate([a], max_jobs=5, lane_budgets={("a", "capped", 0): ["q"]},
                      budgets={"q": 1})
    assert len(choice.job_ids) == 3 and choice.taken == {"q": 1}


def test_priority_then_age_within_a_tenant():
    heads = [Head(5, 1, ("a", "x", 0)), Head(3, 9, ("a", "y", 0)), Head(4, 1, ("a", "x", 0))]
    choice = allocate([TenantTurn("a", 10, heads)], max_jobs=3, lane_budgets={}, budgets={})
    assert choice.job_ids == [3, 4, 5]


budgets_st = st.dictionaries(st.sampled_from(["q1", "q2", "q3"]), st.integers(0, 5))


@settings(max_examples=300, deadline=None)
@given(counts=st.lists(st.integers(0, 8), min_size=1, max_size=5),
       weights=st.lists(st.integers(1, 4), min_size=5, max_size=5),
       lane_keys=st.lists(st.lists(st.sampled_from(["q1", "q2", "q3"]), max_size=2),
                          min_size=5, max_size=5),
       budgets=budgets_st, max_jobs=st.integers(1, 30))
def test_budgets_hold_and_nothing_admissible_is_left_behind(counts, weights, lane_keys, budgets,
                                                            max_jobs):
    turns, lane_budgets, start = [], {}, 0
    for i, count in enumerate(counts):
        turns.append(_turn(f"t{i}", weights[i], {"x": count}, start=start))
        lane_budgets[(f"t{i}", "x", 0)] = lane_keys[i]
        start += 100
    full = {k: budgets.get(k, 0) for k in ("q1", "q2", "q3")}
    choice = allocate(turns, max_jobs=max_jobs, lane_budgets=lane_budgets, budgets=full)
    assert len(choice.job_ids) <= max_jobs and len(set(choice.job_ids)) == len(choice.job_ids)
    for key, used in choice.taken.items():
        assert used <= full[key]
    if len(choice.job_ids) < max_jobs:
        # every job left out belongs to a lane with an exhausted budget (no idle capacity)
        chosen = set(choice.job_ids)
        for turn in turns:
            for head in turn.heads:
                if head.job_id not in chosen:
                    keys = lane_budgets[head.lane]
                    assert any(choice.taken.get(k, 0) >= full[k] for k in keys), head

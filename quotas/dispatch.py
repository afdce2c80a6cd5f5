"""Weighted round-robin dispatch across tenants, under quota budgets: the pure decision of one
claim (no I/O; the claim in ``orchestrator.claiming`` gathers the inputs under locks).

The rule (deficit round robin with a unit cost per job, Shreedhar & Varghese, SIGCOMM 1995):
tenants are visited in order of ``served_seq`` (least recently served first); at each visit a
tenant takes up to ``weight`` jobs, its best first (priority high to low, then oldest), skipping
lanes whose quotas have no budget left; visits go round until ``max_jobs`` jobs are chosen or
no tenant can give more. A tenant that gave nothing (out of jobs or budget) leaves the round.

Starvation bound (docs/admission.md): a tenant with an admissible ready job is served within
N claims that lease anything, N being the number of tenants with admissible ready jobs.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

LaneKey = tuple[str, str, int]  # (tenant, job_type, source_id)


@dataclass(frozen=True)
class Head:
    """A ready job at the head of a lane: ``priority`` (high first) then ``job_id`` (old first)."""

    job_id: int
    priority: int
    lane: LaneKey


@dataclass
class TenantTurn:
    """One tenant's input to a claim: its ``weight`` (jobs per visit) and its lanes' heads."""

    tenant: str
    weight: int
    heads: list[Head] = field(default_factory=list)


@dataclass
class Choice:
    """The decision: ``job_ids`` to lease (in grant order), ``taken`` per budget key, and the
    tenants served, in the order their last visit happened (the last one served last)."""

    job_ids: list[int]
    taken: dict[object, int]
    served: list[str]


def allocate(turns: list[TenantTurn], *, max_jobs: int,
             lane_budgets: dict[LaneKey, list[object]],
             budgets: dict[object, int]) -> Choice:
    """Choose up to ``max_jobs`` jobs from ``turns`` (already in visiting order).

    Args:
        lane_budgets: for each lane, the keys of the budgets one of its jobs consumes (its
            quotas, a half-open breaker's single probe...); a lane absent here is unlimited.
        budgets: remaining units per budget key (>= 0); not mutated.

    Returns:
        The ``Choice``. Every key in ``taken`` satisfies ``taken[k] <= budgets[k]``.
    """
    left = dict(budgets)
    taken: dict[object, int] = {}
    chosen: list[int] = []
    served: list[str] = []
    queue = deque()
    for turn in turns:
        heads = sorted(turn.heads, key=lambda h: (-h.priority, h.job_id))
        if heads:
            queue.append((turn, heads))
    blocked: set[LaneKey] = set()
    while queue and len(chosen) < max_jobs:
        turn, heads = queue.popleft()
        gave = 0
        rest: list[Head] = []
        for index, head in enumerate(heads):
            if gave >= max(1, turn.weight) or len(chosen) >= max_jobs:
                rest.extend(heads[index:])
                break
            if head.lane in blocked:
                continue
            keys = tuple(dict.fromkeys(lane_budgets.get(head.lane, ())))  # each key once
            if any(left.get(k, 0) <= 0 for k in keys):
                blocked.add(head.lane)  # the lane's next jobs need the same budgets
                continue
            for k in keys:
                left[k] -= 1
                taken[k] = taken.get(k, 0) + 1
            chosen.append(head.job_id)
            gave += 1
        if gave:
            if turn.tenant in served:
                served.remove(turn.tenant)
            served.append(turn.tenant)
            rest = [h for h in rest if h.lane not in blocked]
            if rest:
                queue.append((turn, rest))
    return Choice(job_ids=chosen, taken=taken, served=served)

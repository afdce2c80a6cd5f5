"""Weighted round-robin dispatch across tenants, under quota budgets: the pure decision of one
claim (no I/O; the claim in ``orchestrator.claiming`` gathers the inputs under locks).

The rule (deficit round robin with a unit cost per job, Shreedhar & Varghese, SIGCOMM 1995):
tenants are visited in order of ``served_seq`` (least recently served first); a tenant's turn is
``weight`` jobs, its best first (priority high to low, then oldest), skipping lanes whose quotas
have no budget left. A turn may span claims: the first visit of a claim finishes the tenant's
current turn (``credit`` = weight - jobs already taken in it); a tenant goes to the back only
when its turn is complete. Visits go round until ``max_jobs`` jobs are chosen or no tenant can
give more; a tenant that gave nothing (out of jobs or budget) leaves the round.

Starvation bound (docs/admission.md): a tenant with an admissible ready job is served within
W claims that lease anything, W being the sum of the weights of the tenants with admissible
ready jobs (N tenants of weight 1: N claims).
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
    """One tenant's input to a claim: its ``weight`` (jobs per turn), the ``credit`` left in
    its current turn (1..weight; None: a whole turn) and its lanes' heads."""

    tenant: str
    weight: int
    heads: list[Head] = field(default_factory=list)
    credit: int | None = None


@dataclass(frozen=True)
class Served:
    """Where a served tenant ends: ``to_back`` when it completed a turn in this claim (it goes
    behind every tenant not served since), and ``turn_taken``, the jobs taken of the turn it is
    now in (0 after a complete turn)."""

    tenant: str
    to_back: bool
    turn_taken: int


@dataclass
class Choice:
    """The decision: ``job_ids`` to lease (in grant order), ``taken`` per budget key, and the
    tenants served (``Served``), those going to the back in the order they completed turns."""

    job_ids: list[int]
    taken: dict[object, int]
    served: list[Served] = field(default_factory=list)


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
    completed: list[str] = []  # tenants that completed a turn, in the order they did
    last: dict[str, int] = {}  # jobs taken in each tenant's unfinished turn
    queue = deque()
    for turn in turns:
        heads = sorted(turn.heads, key=lambda h: (-h.priority, h.job_id))
        weight = max(1, turn.weight)
        credit = weight if turn.credit is None else min(max(1, turn.credit), weight)
        if heads:
            queue.append((turn, heads, credit, weight - credit))
    blocked: set[LaneKey] = set()
    while queue and len(chosen) < max_jobs:
        turn, heads, quantum, before = queue.popleft()
        gave = 0
        rest: list[Head] = []
        for index, head in enumerate(heads):
            if gave >= quantum or len(chosen) >= max_jobs:
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
        if not gave:
            continue
        weight = max(1, turn.weight)
        if gave == quantum:  # the turn is complete: to the back, a whole turn next time
            if turn.tenant in completed:
                completed.remove(turn.tenant)
            completed.append(turn.tenant)
            last[turn.tenant] = 0
            rest = [h for h in rest if h.lane not in blocked]
            if rest:
                queue.append((turn, rest, weight, 0))
        else:  # out of jobs, budget or slots mid-turn: the turn goes on in the next claim
            last[turn.tenant] = before + gave
    served = [Served(t, True, last[t]) for t in completed]
    served += [Served(t, False, n) for t, n in last.items() if t not in completed]
    return Choice(job_ids=chosen, taken=taken, served=served)

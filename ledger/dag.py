"""Graph arithmetic of dependency chains (no database): topological order and cycle finding.

A run's jobs and their ``depends_on`` edges form a directed graph that must be acyclic.
``topological_order`` is Kahn's algorithm (A. B. Kahn, "Topological sorting of large
networks", Communications of the ACM 5(11):558-562, 1962): repeatedly take a node whose
parents are all placed. O(nodes + edges). When nodes remain that can never be taken, they
contain a cycle, and ``_cycle_among`` returns one of them so the error can name it.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import TypeVar

K = TypeVar("K", bound=Hashable)


class CycleFound(Exception):
    """The graph is not acyclic; ``cycle`` lists its nodes in edge order, first == last."""

    def __init__(self, cycle: list[Hashable]) -> None:
        super().__init__("dependency cycle: " + " -> ".join(map(str, cycle)))
        self.cycle = cycle


def topological_order(nodes: Sequence[K], parents: Mapping[K, Iterable[K]]) -> list[K]:
    """Return ``nodes`` ordered so every node comes after all of its parents.

    Among nodes that are free at the same time the input order is kept (stable), so a
    submission's jobs are created in the order given wherever the edges allow it.

    Args:
        nodes: the distinct nodes.
        parents: ``node -> its parents``; every parent must be in ``nodes``; nodes without an
            entry have no parents. A repeated parent counts once.

    Raises:
        CycleFound: the edges contain a cycle (a self edge is a cycle of one).
        KeyError: a parent that is not in ``nodes``.
    """
    position = {node: i for i, node in enumerate(nodes)}
    children: dict[K, list[K]] = {node: [] for node in nodes}
    waiting: dict[K, int] = {}
    for node in nodes:
        distinct = set(parents.get(node, ()))
        waiting[node] = len(distinct)
        for parent in distinct:
            if parent not in position:
                raise KeyError(parent)
            children[parent].append(node)
    free = deque(node for node in nodes if waiting[node] == 0)
    order: list[K] = []
    while free:
        node = free.popleft()
        order.append(node)
        for child in sorted(children[node], key=position.__getitem__):
            waiting[child] -= 1
            if waiting[child] == 0:
                free.append(child)
    if len(order) < len(nodes):
        stuck = {node for node in nodes if waiting[node] > 0}
        raise CycleFound(_cycle_among(stuck, parents, position))
    return order


def _cycle_among(stuck: set[K], parents: Mapping[K, Iterable[K]],
                 position: Mapping[K, int]) -> list[Hashable]:
    """One cycle among the nodes Kahn's algorithm could not place.

    Each such node has a parent that is also stuck (otherwise its count would have reached 0),
    so walking parent links inside ``stuck`` must revisit a node; the walk from the first
    revisit is a cycle. Returned in edge direction (parent before child), first == last.
    """
    node = min(stuck, key=position.__getitem__)
    seen: dict[K, int] = {}
    walk: list[K] = []
    while node not in seen:
        seen[node] = len(walk)
        walk.append(node)
        node = min((p for p in set(parents.get(node, ())) if p in stuck),
                   key=position.__getitem__)
    loop = walk[seen[node]:]
    loop.reverse()  # the walk followed child -> parent; report parent -> child
    return [*loop, loop[0]]

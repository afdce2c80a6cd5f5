"""The graph arithmetic of ledger.dag: Kahn's topological order and the cycle it reports."""
from __future__ import annotations

import random

import pytest

from ledger.dag import CycleFound, topological_order


def assert_topological(order, parents):
    seen = set()
    for node in order:
        assert set(parents.get(node, ())) <= seen, (node, parents.get(node))
        seen.add(node)


def assert_is_cycle(cycle, parents):
    assert cycle[0] == cycle[-1] and len(cycle) >= 2
    for parent, child in zip(cycle, cycle[1:], strict=False):
        assert parent in parents.get(child, ()), (parent, child)


def test_order_puts_parents_first_and_keeps_input_order_where_free():
    parents = {"d": ["b", "c"], "b": ["a"], "c": ["a"]}
    assert topological_order(["d", "c", "b", "a"], parents) == ["a", "c", "b", "d"]
    assert topological_order(["x", "y", "z"], {}) == ["x", "y", "z"]


def test_repeated_parents_count_once():
    assert topological_order(["a", "b"], {"b": ["a", "a"]}) == ["a", "b"]


@pytest.mark.parametrize("parents,expected", [
    ({"a": ["a"]}, {"a"}),
    ({"a": ["b"], "b": ["a"]}, {"a", "b"}),
    ({"a": ["c"], "b": ["a"], "c": ["b"]}, {"a", "b", "c"}),
])
def test_cycles_are_reported_in_edge_order(parents, expected):
    nodes = sorted({*parents, *(p for ps in parents.values() for p in ps)})
    with pytest.raises(CycleFound) as caught:
        topological_order(nodes, parents)
    assert set(caught.value.cycle) == expected
    assert_is_cycle(caught.value.cycle, parents)


def test_only_the_cycle_is_named_not_what_hangs_below_or_above_it():
    # root -> a -> b -> c -> a, and c -> tail: root and tail are not part of the cycle
    parents = {"a": ["root", "c"], "b": ["a"], "c": ["b"], "tail": ["c"]}
    with pytest.raises(CycleFound) as caught:
        topological_order(["root", "a", "b", "c", "tail"], parents)
    assert set(caught.value.cycle) == {"a", "b", "c"}
    assert_is_cycle(caught.value.cycle, parents)


def test_a_parent_outside_the_nodes_is_a_key_error():
    with pytest.raises(KeyError):
        topological_order(["a"], {"a": ["ghost"]})


def test_random_dags_are_ordered_and_random_back_edges_are_found():
    rng = random.Random(20240601)
    for _ in range(200):
        n = rng.randint(1, 60)
        nodes = list(range(n))
        rng.shuffle(nodes)
        rank = {node: i for i, node in enumerate(sorted(nodes))}
        parents = {node: [p for p in nodes if rank[p] < rank[node] and rng.random() < 0.1]
                   for node in nodes}
        assert_topological(topological_order(nodes, parents), parents)
        if n >= 2:
            low, high = sorted(rng.sample(nodes, 2))
            # a path low -> ... -> high exists only sometimes; high -> low closes a cycle only
            # then, so add both edges to be sure: low -> high and high -> low
            parents[high] = [*parents[high], low]
            parents[low] = [*parents[low], high]
            with pytest.raises(CycleFound) as caught:
                topological_order(nodes, parents)
            assert_is_cycle(caught.value.cycle, parents)


def test_a_thousand_job_chain_is_linear_work():
    nodes = [f"j{i}" for i in range(1000)]
    parents = {nodes[i]: [nodes[i - 1]] for i in range(1, 1000)}
    assert topological_order(list(reversed(nodes)), parents) == nodes

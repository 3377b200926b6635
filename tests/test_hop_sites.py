"""Sites (thesis 7.3.1-7.3.2): each Spread_Segment is a site; its representative is the first
of its daemons in spread.conf that is in the ring's membership; each live site has its own
dissemination tree, Dijkstra's shortest paths over the RouteMatrix costs, the same at every
daemon (deterministic ties)."""
from __future__ import annotations

import random

import pytest

import spread_mini as sr


def test_the_representative_is_the_first_live_daemon_in_configuration_order():
    order = ["s1", "s2", "s3"]
    assert sr.site_representative(order, ["s3", "s2", "s1"]) == "s1"
    assert sr.site_representative(order, {"s3", "s2"}) == "s2"  # s1 crashed: s2 takes over
    assert sr.site_representative(order, ["s3", "stranger"]) == "s3"  # names outside the site do not count
    assert sr.site_representative(order, []) is None


def test_the_representative_does_not_move_when_a_later_daemon_joins():
    order = ["s1", "s2", "s3"]
    assert sr.site_representative(order, ["s2"]) == sr.site_representative(order, ["s2", "s3"]) == "s2"


def test_the_tree_follows_the_cheapest_paths():
    # the thesis's three campus sites, with the direct 0-2 link dearer than going through 1
    costs = [[0, 1, 5], [1, 0, 1], [5, 1, 0]]
    tree = sr.dissemination_tree(costs, 0, [0, 1, 2])
    assert tree.parent == {0: None, 1: 0, 2: 1} and tree.distance == {0: 0, 1: 1, 2: 2}
    assert tree.children(0) == [1] and tree.children(1) == [2] and tree.children(2) == []
    # each site has its own tree: from 2 the packets go to 1, and 1 passes them to 0
    assert sr.dissemination_trees(costs, [0, 1, 2])[2].parent == {2: None, 1: 2, 0: 1}


def test_a_dead_site_is_routed_around_and_a_cut_off_site_is_unreachable():
    costs = [[0, 1, 9, 0], [1, 0, 1, 0], [9, 1, 0, 1], [0, 0, 1, 0]]  # 0: no direct link
    without_1 = sr.dissemination_tree(costs, 0, [0, 2, 3])
    assert without_1.parent == {0: None, 2: 0, 3: 2} and without_1.distance[3] == 10
    without_2 = sr.dissemination_tree(costs, 0, [0, 1, 3])
    assert without_2.unreachable == [3] and 3 not in without_2.parent


def test_after_a_merge_a_sites_records_reach_its_old_view_through_that_view_only():
    # views {0, 2} and {1} merged: 1 may give the merge up after 0 and 2 decided it, so 0's
    # records go to 2 on their direct link, not through 1 (the cheaper path)
    costs = [[0, 2, 5], [2, 0, 1], [2, 1, 0]]
    assert sr.dissemination_tree(costs, 0, range(3)).parent[2] == 1
    groups = {0: frozenset({0, 2}), 1: frozenset({1}), 2: frozenset({0, 2})}
    trees = sr.merged_view_trees(costs, groups)
    assert trees[0].parent == {0: None, 1: 0, 2: 0} and trees[0].distance[2] == 5
    # the joined site is still reached by the cheapest path, through the other view if need be
    assert trees[1].parent == {1: None, 0: 1, 2: 1}
    assert trees[2].parent == {2: None, 0: 2, 1: 2}
    line = [[0, 1, 0], [1, 0, 1], [0, 1, 0]]  # 0 - 1 - 2: 2 joined 0's view through 1
    joined = sr.merged_view_trees(line, {0: frozenset({0, 1}), 1: frozenset({0, 1}), 2: frozenset({2})})
    assert joined[0].parent == {0: None, 1: 0, 2: 1} and joined[2].parent == {2: None, 1: 2, 0: 1}


def test_ties_go_to_the_lower_site_id_whatever_order_the_sites_come_in():
    costs = [[0, 1, 1, 0], [1, 0, 0, 1], [1, 0, 0, 1], [0, 1, 1, 0]]  # 3 is 2 away via 1 or 2
    for live in ([0, 1, 2, 3], [3, 2, 1, 0], {2, 0, 3, 1}):
        assert sr.dissemination_tree(costs, 0, live).parent[3] == 1
    full = [[0 if i == j else 1 for j in range(4)] for i in range(4)]
    assert sr.dissemination_tree(full, 2, range(4)).parent == {2: None, 0: 2, 1: 2, 3: 2}


def test_asymmetric_costs_are_read_from_the_sender_side():
    costs = [[0, 10, 1], [1, 0, 1], [1, 1, 0]]  # 0 -> 1 is dear, 1 -> 0 cheap
    assert sr.dissemination_tree(costs, 0, range(3)).parent[1] == 2
    assert sr.dissemination_tree(costs, 1, range(3)).parent[0] == 1


@pytest.mark.parametrize("seed", range(200))
def test_random_matrices_give_shortest_path_trees(seed):
    """Against brute force: every site's distance is the cheapest path over live sites, the
    parent's distance plus the link's cost gives it, and the tree has no cycle."""
    rng = random.Random(seed)
    n = rng.randint(1, 7)
    costs = [[0 if i == j else rng.choice([0, 1, 1, 2, 3, 7, 100]) for j in range(n)] for i in range(n)]
    live = [s for s in range(n) if rng.random() < 0.8] or [0]
    source = rng.choice(live)
    tree = sr.dissemination_tree(costs, source, live)
    best = {source: 0}
    for _ in range(n):  # Bellman-Ford, as the independent reference
        for u in list(best):
            for v in live:
                if v != u and costs[u][v] > 0 and best[u] + costs[u][v] < best.get(v, 1 << 30):
                    best[v] = best[u] + costs[u][v]
    assert tree.distance == best, (seed, costs, live)
    assert sorted(tree.unreachable) == sorted(set(live) - set(best))
    for site, parent in tree.parent.items():
        if parent is not None:
            assert tree.distance[parent] + costs[parent][site] == tree.distance[site]
    assert tree == sr.dissemination_tree(costs, source, list(reversed(live)))  # same at every daemon

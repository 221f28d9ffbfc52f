from collections import Counter

import numpy as np

from popnas.search.exploration import block_score, exploration_front, exploration_sets
from popnas.space import Block, Cell

OPERATORS = ("identity", "3 conv", "2 maxpool", "gru")


def cell(*blocks: tuple[int, str, int, str]) -> Cell:
    return Cell(tuple(Block(*block) for block in blocks))


def test_sets_find_unused_operator_and_input():
    front = [cell((-1, "3 conv", -1, "identity")), cell((-1, "3 conv", -1, "2 maxpool"))] * 5
    sets = exploration_sets(front, operators=OPERATORS, inputs=(-2, -1))
    assert sets.operators == {"gru"}
    assert sets.inputs == {-2}


def test_sets_empty_when_usage_is_balanced():
    front = [cell((-2, op, -1, op)) for op in OPERATORS]
    sets = exploration_sets(front, operators=OPERATORS, inputs=(-2, -1))
    assert sets.empty


def test_score_counts_second_operator():
    # The original implementation scored the first operator twice and ignored the second.
    front = [cell((-1, "3 conv", -2, "identity")), cell((-2, "3 conv", -1, "2 maxpool"))] * 5
    sets = exploration_sets(front, operators=OPERATORS, inputs=(-2, -1))
    counts_operators, counts_inputs = Counter(sets.operator_counts), Counter(sets.input_counts)
    second_rare = block_score(Block(-1, "3 conv", -1, "gru"), sets, counts_operators, counts_inputs)
    neither_rare = block_score(Block(-1, "3 conv", -1, "3 conv"), sets, counts_operators, counts_inputs)
    assert second_rare > neither_rare


def test_front_picks_rare_operator_and_respects_limit():
    front = [cell((-1, "3 conv", -1, "identity")), cell((-1, "3 conv", -1, "2 maxpool"))] * 5
    sets = exploration_sets(front, operators=OPERATORS, inputs=(-2, -1))
    candidates = [
        cell((-1, "3 conv", -1, "3 conv")),
        cell((-2, "gru", -2, "gru")),
        cell((-2, "gru", -1, "gru")),
        cell((-2, "gru", -2, "identity")),
    ]
    # Sorted by predicted accuracy, best first; later ones are faster, so none dominates another.
    objectives = np.array([[-0.9, 4.0], [-0.8, 3.0], [-0.7, 2.0], [-0.6, 1.0]])
    chosen = exploration_front(candidates, objectives, sets=sets, excluded=set(), limit=2)
    assert len(chosen) == 2
    assert 0 not in chosen
    assert all("gru" in str(candidates[i]) for i in chosen)


def test_front_skips_dominated_and_excluded():
    front = [cell((-1, "3 conv", -1, "identity"))] * 10
    sets = exploration_sets(front, operators=OPERATORS, inputs=(-2, -1))
    first = cell((-2, "gru", -2, "gru"))
    dominated = cell((-2, "2 maxpool", -2, "gru"))
    excluded = cell((-2, "gru", -2, "identity"))
    objectives = np.array([[-0.9, 1.0], [-0.8, 2.0], [-0.7, 0.5]])
    chosen = exploration_front([first, dominated, excluded], objectives, sets=sets, excluded={excluded.key}, limit=5)
    assert chosen == [0]


def test_front_empty_when_sets_empty():
    front = [cell((-2, op, -1, op)) for op in OPERATORS]
    sets = exploration_sets(front, operators=OPERATORS, inputs=(-2, -1))
    chosen = exploration_front(front, np.zeros((4, 2)), sets=sets, excluded=set(), limit=4)
    assert chosen == []

"""Label arrangements of Recurrent Assistance (eqs. 2-4) on hand-made labels and scores."""

import numpy as np
import pytest
import torch

from actrec.data import label_maps as lm
from actrec.data.labels import OFF_BLOCK, InputLayout, LabelSpace
from actrec.errors import ConfigError

# D1 ("L" in the paper) has 3 classes, D2 ("M") has 5; class 0 is background in both.
SIZES = (3, 5)
Y1 = np.array([0, 2, 2, -1, 1])
Y2 = np.array([4, 0, -1, 3])


def test_concat_eq4_offsets_the_second_dataset():
    t = lm.make_tables("concat", SIZES)
    assert [m[0].tolist() for m in t] == [[0, 1, 2], [3, 4, 5, 6, 7]]
    assert lm.num_outputs("concat", SIZES) == 8
    assert lm.map_labels(Y1, t[0][0]).tolist() == [0, 2, 2, -1, 1]
    assert lm.map_labels(Y2, t[1][0]).tolist() == [7, 3, -1, 6]


def test_merged_eq2_shares_the_first_l_outputs_whatever_the_order():
    for sizes, small in (((3, 5), 0), ((5, 3), 1)):
        t = lm.make_tables("merged", sizes)
        assert lm.num_outputs("merged", sizes) == 5
        assert t[small][0].tolist() == [0, 1, 2]  # background 0 -> 0, class y -> y
        assert t[1 - small][0].tolist() == [0, 1, 2, 3, 4]
    t = lm.make_tables("merged", SIZES)
    assert lm.map_labels(Y1, t[0][0]).tolist() == [0, 2, 2, -1, 1]
    assert lm.map_labels(Y2, t[1][0]).tolist() == [4, 0, -1, 3]


def test_random_eq3_is_a_seeded_permutation_of_the_first_l():
    a = lm.make_tables("random", SIZES, np.random.default_rng(7))
    b = lm.make_tables("random", SIZES, np.random.default_rng(7))
    assert a[0][0].tolist() == b[0][0].tolist()  # seeded: the same map again
    assert sorted(a[0][0].tolist()) == [0, 1, 2]  # one-to-one onto the first l outputs
    assert a[1][0].tolist() == [0, 1, 2, 3, 4]  # the larger dataset keeps its indices
    perm = np.array([2, 0, 1])
    assert lm.map_labels(Y1, perm).tolist() == [2, 1, 1, -1, 0]
    maps = {tuple(lm.make_tables("random", SIZES, np.random.default_rng(s))[0][0])
            for s in range(20)}
    assert len(maps) > 1  # not the identity every time


def test_multi_random_gives_k_maps_for_the_smaller_dataset_only():
    t = lm.make_tables("multi-random", (6, 4), np.random.default_rng(0), count=3)
    assert len(t[0]) == 1 and t[0][0].tolist() == list(range(6))
    assert len(t[1]) == 3 and all(sorted(m.tolist()) == [0, 1, 2, 3] for m in t[1])
    assert len({tuple(m) for m in t[1]}) > 1
    with pytest.raises(ConfigError, match="at least 2"):
        lm.make_tables("multi-random", SIZES, np.random.default_rng(0), count=1)
    with pytest.raises(ConfigError, match="one of"):
        lm.make_tables("shuffled", SIZES)


def test_scores_are_arranged_like_labels():
    # A softmax vector of D1 (3 classes) under the random map [2, 0, 1] into 5 outputs:
    # c_{table[y]} = s_y, the rest zero (eq. 3 read as where each class goes).
    s = np.array([[0.7, 0.2, 0.1]])
    out = lm.map_scores(s, np.array([2, 0, 1]), 5)
    assert out.tolist() == [[pytest.approx(0.2), pytest.approx(0.1), pytest.approx(0.7), 0, 0]]
    # concat zero-fills the other dataset's block (eq. 4)
    out = lm.map_scores(np.array([0.5, 0.25, 0.25, 0.0, 0.0]), np.arange(5) + 3, 8)
    assert out.tolist() == [0, 0, 0, 0.5, 0.25, 0.25, 0, 0]


def test_unmap_and_predict_invert_the_map():
    table = np.array([2, 0, 1])
    assert lm.unmap_labels(np.array([2, 1, 0, 4, -1]), table).tolist() == [0, 2, 1, lm.OFF_MAP, -1]
    logits = torch.tensor([[0.0, 0.0, 5.0, 0.0, 9.0],  # best of all: output 4 (no D1 class)
                           [3.0, 1.0, 0.0, 0.0, 0.0]])
    assert lm.predict_local(logits, table, "block").tolist() == [0, 1]  # output 2 -> class 0
    assert lm.predict_local(logits, table, "full").tolist() == [lm.OFF_MAP, 1]
    assert lm.OFF_MAP == OFF_BLOCK


def test_label_space_and_layout_apply_the_maps():
    rng = np.random.default_rng(3)
    space = LabelSpace.build((("bg", "a", "b"), ("bg", "p", "q", "r", "s")), "random", rng)
    assert space.num_classes == 5
    table = space.table(0)
    assert space.to_global(Y1, 0).tolist() == [int(table[y]) if y >= 0 else -1 for y in Y1]
    assert space.to_local(space.to_global(Y1, 0), 0).tolist() == Y1.tolist()
    again = LabelSpace.from_state(space.to_state())
    assert again == space
    layout = InputLayout((3, 5), "scores", tuple(space.tables[k][0] for k in range(2)))
    assert layout.width == 5
    x = layout.arrange(np.array([[0.7, 0.2, 0.1]]), 0)
    assert x[0, table].tolist() == pytest.approx([0.7, 0.2, 0.1])
    assert LabelSpace((("a",), ("b", "c"))).names() == ("a", "b", "c")
    assert LabelSpace((("bg", "a"), ("bg", "p", "q")), "merged").names() == ("bg/bg", "a/p", "q")
    with pytest.raises(ConfigError, match="needs its tables"):
        LabelSpace((("a",), ("b", "c")), "random")


def test_remap_rows_switches_maps_of_labels_and_score_inputs():
    tables = [np.array([0, 1, 2]), np.array([2, 0, 1])]
    x = np.zeros((2, 2, 5), np.float32)
    x[:, :, :3] = [[0.7, 0.2, 0.1]]  # both rows under map 0
    y = np.array([[0, 0], [2, 2]])
    lm.remap_rows(x, y, np.array([0, 1]), tables, np.array([0, 1]), scores=True)
    assert y[:, 0].tolist() == [0, 2]  # row 0 kept map 0
    assert y[:, 1].tolist() == [2, 1]  # class 0 -> 2, class 2 -> 1
    assert x[0, 1].tolist() == pytest.approx([0.2, 0.1, 0.7, 0, 0])
    assert x[0, 0].tolist() == pytest.approx([0.7, 0.2, 0.1, 0, 0])

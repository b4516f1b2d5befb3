"""Label spaces and input arrangements: offsets, block argmax and zero-filled blocks by hand."""

import numpy as np
import pytest
import torch

from actrec.data.labels import OFF_BLOCK, InputLayout, LabelSpace
from actrec.errors import ConfigError

SPACE = LabelSpace((("a", "b", "c"), ("x", "y")))  # L1 = 3, L2 = 2


def test_offsets_and_blocks():
    assert SPACE.offsets == (0, 3)
    assert SPACE.num_classes == 5
    assert SPACE.block(0) == slice(0, 3)
    assert SPACE.block(1) == slice(3, 5)
    assert SPACE.names() == ("a", "b", "c", "x", "y")
    assert LabelSpace((("only",),)).offsets == (0,)
    with pytest.raises(ConfigError):
        LabelSpace((("a",), ()))


def test_to_global_keeps_unlabelled():
    np.testing.assert_array_equal(SPACE.to_global(np.array([0, 2, -1]), 0), [0, 2, -1])
    np.testing.assert_array_equal(SPACE.to_global(np.array([1, -1, 0]), 1), [4, -1, 3])


# Three frames of logits over the 5 outputs.
LOGITS = torch.tensor([
    [0.1, 0.9, 0.2, 5.0, 0.0],  # D1 block -> b (1); full -> x (3), off D1's block
    [2.0, 0.0, 0.0, 1.0, 1.5],  # D1 block -> a (0); full -> a; D2 block -> y (1)
    [0.0, 0.0, 3.0, 0.5, 0.4],  # D1 block -> c (2); D2 block -> x (0); full -> c
])


def test_block_argmax_by_hand():
    assert SPACE.predict(LOGITS, 0, "block").tolist() == [1, 0, 2]
    assert SPACE.predict(LOGITS, 1, "block").tolist() == [0, 1, 0]


def test_full_argmax_marks_other_block():
    assert SPACE.predict(LOGITS, 0, "full").tolist() == [OFF_BLOCK, 0, 2]
    assert SPACE.predict(LOGITS, 1, "full").tolist() == [0, OFF_BLOCK, OFF_BLOCK]
    # Batched [T, N, K] works the same way.
    batched = LOGITS.reshape(3, 1, 5)
    assert SPACE.predict(batched, 0, "full").reshape(-1).tolist() == [OFF_BLOCK, 0, 2]
    with pytest.raises(ConfigError):
        SPACE.predict(LOGITS, 0, "nearest")


def test_blocks_layout_zero_fills_different_dims():
    layout = InputLayout((3, 2), "blocks")
    assert not layout.shared and layout.width == 5
    assert layout.columns(0) == slice(0, 3) and layout.columns(1) == slice(3, 5)
    x2 = np.array([[7.0, 8.0]], dtype=np.float32)
    np.testing.assert_array_equal(layout.arrange(x2, 1), [[0, 0, 0, 7, 8]])
    x1 = np.array([[1.0, 2.0, 3.0]])
    np.testing.assert_array_equal(layout.arrange(x1, 0), [[1, 2, 3, 0, 0]])
    with pytest.raises(ValueError):
        layout.arrange(x1, 1)


def test_equal_dims_and_projection_share_columns():
    same = InputLayout((4, 4), "blocks")
    assert same.shared and same.width == 4 and same.columns(1) == slice(0, 4)
    proj = InputLayout((3, 2), "projection")
    assert proj.shared and proj.width == 3
    np.testing.assert_array_equal(proj.arrange(np.array([[7.0, 8.0]]), 1), [[7, 8, 0]])
    with pytest.raises(ConfigError):
        InputLayout((3, 2), "interleaved")
    with pytest.raises(ConfigError):
        InputLayout((0,), "blocks")

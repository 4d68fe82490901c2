import numpy as np
import pytest

from methods.llminit.method import pool_users, random_selection, uniform_selection, variance_selection


def test_uniform_selection_stride():
    assert uniform_selection(384, 128).tolist() == list(range(0, 384, 3))
    assert uniform_selection(10, 4).tolist() == [0, 2, 4, 6]  # s = 10 // 4 = 2, first K


def test_random_selection_subset_or_with_replacement():
    rng = np.random.default_rng(0)
    subset = random_selection(16, 16, rng, replacement=False)
    assert sorted(subset.tolist()) == list(range(16))
    draws = [random_selection(16, 16, np.random.default_rng(s), replacement=True) for s in range(5)]
    assert any(len(np.unique(d)) < 16 for d in draws)  # the code's variant allows duplicates


def test_variance_selection_over_popular_rows():
    emb = np.zeros((6, 4))
    emb[:3, 1] = [0, 10, -10]  # dimension 1 varies among the popular rows 0-2
    emb[3:, 3] = [0, 50, -50]  # dimension 3 varies only among unpopular rows
    emb[:3, 2] = [0, 1, -1]
    assert variance_selection(emb, 2, rows=np.array([0, 1, 2])).tolist() == [1, 2]
    assert variance_selection(emb, 2).tolist() == [1, 3]


def test_pool_users_mean_max_propagation():
    items = np.array([[1.0, 0.0], [3.0, 2.0], [5.0, -2.0]], dtype=np.float32)
    user_items = [np.array([0, 1]), np.array([], dtype=np.int64)]
    assert pool_users(items, user_items, "mean")[0].tolist() == [2.0, 1.0]
    assert pool_users(items, user_items, "max")[0].tolist() == [3.0, 2.0]
    assert pool_users(items, user_items, "mean")[1].tolist() == [0.0, 0.0]
    degree = np.array([4, 1, 1])
    expected = items[0] / np.sqrt(2 * 4) + items[1] / np.sqrt(2 * 1)
    assert pool_users(items, user_items, "propagation", degree)[0] == pytest.approx(expected)

"""Paired differences and popularity buckets, against numbers computed by hand."""

import math

import numpy as np
import pytest

from recbole_cemg.evaluation import UserResults
from recbole_cemg.significance import paired_difference, per_user_means, popularity_breakdown


def results(ranks, counts=None, users=None):
    users = users or [f"u{i}" for i in range(len(ranks))]
    return UserResults(users, [f"i{i}" for i in range(len(ranks))], np.array(ranks),
                       np.array(counts if counts is not None else [0] * len(ranks)))


def test_per_user_metrics_follow_recbole_definitions():
    run = results([1, 3, 10, 11])
    assert run.metric("recall@10").tolist() == [1, 1, 1, 0]
    assert run.metric("ndcg@10") == pytest.approx([1.0, 1 / math.log2(4), 1 / math.log2(11), 0.0])
    assert run.metric("hit@5").tolist() == [1, 1, 0, 0]
    with pytest.raises(ValueError, match="per-user metrics"):
        run.metric("mrr@10")


def test_paired_difference_is_the_paired_t_interval_computed_by_hand():
    # recall@1 per user: model 1,1,0,1 ; reference 0,1,0,0  ->  differences 1, 0, 0, 1
    model, reference = results([1, 1, 5, 1]), results([2, 1, 5, 3])
    diff = paired_difference([model], [reference], "recall@1")
    mean, sd, n = 0.5, math.sqrt(1 / 3), 4  # sample sd of (1, 0, 0, 1)
    t_975_df3 = 3.182446  # Student's t table, 3 degrees of freedom
    assert diff.mean == pytest.approx(mean)
    assert diff.low == pytest.approx(mean - t_975_df3 * sd / math.sqrt(n), abs=1e-5)
    assert diff.high == pytest.approx(mean + t_975_df3 * sd / math.sqrt(n), abs=1e-5)
    assert diff.users == 4 and diff.verdict == "tie"  # [-0.42, 1.42] contains 0
    assert 0.05 < diff.p_value < 0.5


def test_paired_difference_pairs_users_not_positions_and_pools_seeds():
    # the reference lists the same users in another order; the model has two seeds
    reference = results([1, 20, 20], users=["a", "b", "c"])
    seed1 = results([20, 1, 1], users=["c", "b", "a"])
    seed2 = results([20, 1, 20], users=["c", "b", "a"])
    assert per_user_means([seed1, seed2], "recall@10") == {"a": 0.5, "b": 1.0, "c": 0.0}
    diff = paired_difference([seed1, seed2], [reference], "recall@10")
    assert diff.mean == pytest.approx(((0.5 - 1) + (1 - 0) + (0 - 0)) / 3)


def test_a_clear_win_is_marked_and_identical_rankings_tie():
    better = results([1] * 50 + [20] * 50)
    worse = results([20] * 90 + [1] * 10)
    assert paired_difference([better], [worse], "ndcg@10").verdict == "win"
    assert paired_difference([worse], [better], "ndcg@10").verdict == "loss"
    same = paired_difference([better], [better], "ndcg@10")
    assert (same.mean, same.low, same.high, same.verdict) == (0.0, 0.0, 0.0, "tie")
    with pytest.raises(ValueError, match="share 0 test user"):
        paired_difference([better], [results([1, 2], users=["x", "y"])], "ndcg@10")


def test_popularity_buckets_against_hand_counts():
    # targets seen 0, 3, 4, 7, 12, 25, 25 times in training; ranks decide recall@10
    run = results([1, 30, 2, 5, 40, 1, 11], counts=[0, 3, 4, 7, 12, 25, 25])
    buckets = {b["bucket"]: b for b in popularity_breakdown([run, run], ["recall@10", "ndcg@10"])}
    assert [b for b in buckets] == ["0", "1-4", "5-9", "10-19", "20+"]
    assert buckets["0"]["share"] == pytest.approx(1 / 7) and buckets["0"]["recall@10"] == 1.0
    assert buckets["1-4"]["share"] == pytest.approx(2 / 7) and buckets["1-4"]["recall@10"] == 0.5
    assert buckets["1-4"]["ndcg@10"] == pytest.approx((0 + 1 / math.log2(3)) / 2)
    assert buckets["5-9"]["users"] == 1 and buckets["10-19"]["recall@10"] == 0.0
    assert buckets["20+"]["share"] == pytest.approx(2 / 7) and buckets["20+"]["recall@10"] == 0.5
    assert sum(b["share"] for b in buckets.values()) == pytest.approx(1.0)


@pytest.mark.parametrize("suffix", [".users.tsv.gz", ".users.tsv"])
def test_per_user_results_round_trip_compressed_or_plain(tmp_path, suffix):
    """What a run writes (gzip, reproducible to the byte) and what earlier runs wrote (plain) read back alike."""
    original = results([3, 1, 40, 7], counts=[5, 0, 2, 9], users=["u1", "u2", "u3", "u4"])
    path = str(tmp_path / f"a{suffix}")
    original.write(path, ["recall@10", "ndcg@10"])
    again = str(tmp_path / f"b{suffix}")
    original.write(again, ["recall@10", "ndcg@10"])
    with open(path, "rb") as first, open(again, "rb") as second:
        assert first.read() == second.read()
    loaded = UserResults.read(path)
    assert loaded.users == original.users and loaded.items == original.items
    assert (loaded.ranks == original.ranks).all() and (loaded.train_counts == original.train_counts).all()
    with open(path, "rb") as f:
        assert (f.read(2) == b"\x1f\x8b") == suffix.endswith(".gz")
    assert loaded.held_out is None  # a run without held-out items has no such column
    original.held_out = np.array([False, True, False, False])  # a cold-start run's
    original.write(path, ["recall@10"])
    loaded = UserResults.read(path)
    assert loaded.held_out.tolist() == [False, True, False, False]
    warm = loaded.select({"u4", "u1"})
    assert warm.users == ["u1", "u4"] and warm.ranks.tolist() == [3, 7] and warm.held_out.tolist() == [False, False]

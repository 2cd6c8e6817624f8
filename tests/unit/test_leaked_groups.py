"""The backstop for Train worker groups that outlive their Tune trial: the decision, without Ray."""

from __future__ import annotations

from rayinfra.train.leaked_groups import Group, bundle_shape, to_remove

WORKER = bundle_shape([{"CPU": 0.99}])


def test_only_an_empty_train_shaped_group_is_removed_and_only_after_the_grace():
    groups = [Group("leaked", WORKER, occupied=False), Group("running", WORKER, occupied=True),
              Group("tune-trial", bundle_shape([{"CPU": 0.01}]), occupied=False)]  # fmt: skip
    remove, since = to_remove(groups, WORKER, {}, now=100.0, grace_s=15)
    assert remove == [] and since == {"leaked": 100.0}  # just seen empty: a new run's workers may be on their way
    remove, since = to_remove(groups, WORKER, since, now=110.0, grace_s=15)
    assert remove == []
    remove, since = to_remove(groups, WORKER, since, now=115.0, grace_s=15)
    assert remove == ["leaked"]


def test_a_group_that_gains_an_actor_starts_its_grace_again():
    empty, busy = [Group("g", WORKER, occupied=False)], [Group("g", WORKER, occupied=True)]
    _, since = to_remove(empty, WORKER, {}, now=0.0)
    _, since = to_remove(busy, WORKER, since, now=10.0)
    assert since == {}
    remove, _ = to_remove(empty, WORKER, since, now=20.0, grace_s=15)
    assert remove == []


def test_bundle_shapes_compare_amounts_rounded_and_ignore_zeros():
    assert bundle_shape([{"CPU": 0.99, "GPU": 0.0}]) == bundle_shape([{"CPU": 0.990000001}])
    assert bundle_shape([{"CPU": 0.99}] * 2) != WORKER

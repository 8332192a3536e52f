"""The generator's learning-rate schedule (``lr_schedule``): every optimizer step of an epoch gets the rate of its
place in the whole training, and nothing of the schedule outlives the epoch."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from recbole_cemg.trainer import CEMGTrainer, learning_rate_factor


def test_cosine_runs_from_the_full_rate_to_zero():
    assert learning_rate_factor("cosine", 0.0) == 1.0
    assert learning_rate_factor("cosine", 0.5) == pytest.approx(0.5)
    assert learning_rate_factor("cosine", 1.0) == pytest.approx(0.0)
    assert learning_rate_factor("cosine", 1.5) == pytest.approx(0.0)  # past the last epoch it stays at 0
    assert learning_rate_factor("constant", 0.7) == 1.0


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_each_step_of_an_epoch_gets_the_rate_of_its_place_in_training(schedule):
    weight = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.SGD([weight], lr=0.1)
    trainer = SimpleNamespace(config={"lr_schedule": schedule}, epochs=3, learning_rate=0.1, optimizer=optimizer)
    seen = []
    optimizer.register_step_post_hook(lambda opt, args, kwargs: seen.append(opt.param_groups[0]["lr"]))
    for epoch in (1, 2):  # a run resumed after epoch 0: only the epoch index tells where it is
        with CEMGTrainer.scheduled_learning_rate(trainer, epoch, steps=4):
            for _ in range(4):
                weight.grad = torch.ones(3)
                optimizer.step()
    if schedule == "constant":
        assert seen == [0.1] * 8
    else:
        assert seen == pytest.approx([0.1 * 0.5 * (1 + math.cos(math.pi * step / 12)) for step in range(4, 12)])
        assert seen[-1] < 0.003 and seen == sorted(seen, reverse=True)
    weight.grad = torch.ones(3)
    optimizer.step()  # outside an epoch nothing resets the rate: the hook was removed with the epoch
    assert seen[-1] == seen[-2]
    # the SGD steps moved the weight by exactly the rates they were given
    assert weight.detach() == pytest.approx(torch.full((3,), 1 - sum(seen)))

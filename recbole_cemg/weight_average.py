"""An exponential moving average of a model's trainable weights (Polyak averaging), for evaluation and the saved model.

Two CEMG generators trained on the same codes from different seeds gain about as much R@10 summed as two SASRecs do,
and more: much of one run's error is its own optimisation noise. A running average of the weights along one run
takes part of that noise out at no cost in scoring: the averaged model is one model of the same size, ranking by the
same code tuples. Training steps keep updating the raw weights; the average is swapped in only to validate and to
save the best model, so the checkpoint (and everything evaluated from it) is the averaged one.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

from recbole_cemg.errors import InputError


class WeightAverage:
    """After optimiser step ``n`` (from 1), the average of the weights ``w_1 .. w_n`` with weights ``decay^(n - k)``,
    normalised: ``(1 - d) / (1 - d^n)`` of the new weights into the running average (Adam's bias correction). Its
    horizon is ``1 / (1 - decay)`` steps from the first step on, and the initialisation takes no part in it."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.parameters = [p for p in model.parameters() if p.requires_grad]
        self.average = [p.detach().clone() for p in self.parameters]
        self.steps = 0

    @torch.no_grad()
    def update(self) -> None:
        self.steps += 1
        share = (1.0 - self.decay) / (1.0 - self.decay ** self.steps)
        for parameter, average in zip(self.parameters, self.average):
            average.lerp_(parameter, share)

    @contextlib.contextmanager
    def swapped_in(self) -> Iterator[None]:
        """The model holds the averaged weights inside the block and its own weights again after it."""
        for parameter, average in zip(self.parameters, self.average):
            parameter.data, average.data = average.data, parameter.data
        try:
            yield
        finally:
            for parameter, average in zip(self.parameters, self.average):
                parameter.data, average.data = average.data, parameter.data

    @torch.no_grad()
    def install(self) -> None:
        """The model keeps the averaged weights from now on."""
        for parameter, average in zip(self.parameters, self.average):
            parameter.copy_(average)

    def state_dict(self) -> dict:
        return {"average": [a.clone() for a in self.average], "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        if [a.shape for a in state["average"]] != [a.shape for a in self.average]:
            raise InputError("the saved weight average does not fit this model's trainable parameters: was it written "
                             "with another configuration?")
        for average, saved in zip(self.average, state["average"]):
            average.copy_(saved)
        self.steps = state["steps"]

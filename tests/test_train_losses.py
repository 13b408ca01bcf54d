"""The training-loss tap: one loss per optimizer step, whatever shape the model's scalar loss has."""

from __future__ import annotations

import pytest
import torch

from hf_metalr.integration.train_losses import TrainLossTap


class LossModel(torch.nn.Module):
    """Returns the loss it is told to, shaped as told (a 0-d tensor or one of shape (1,))."""

    def forward(self, loss):
        return {"loss": loss}


@pytest.mark.parametrize("shape", [(), (1,)])
def test_steps_of_one_and_of_several_micro_batches_give_one_float_each(shape):
    model, tap = LossModel().train(), TrainLossTap()
    tap.attach(model)
    model(torch.full(shape, 1.5))  # one micro-batch
    tap.end_step()
    model(torch.full(shape, 2.0, dtype=torch.bfloat16))
    model(torch.full(shape, 3.0, dtype=torch.bfloat16))  # two micro-batches: their mean
    tap.end_step()
    model(torch.full(shape, 4.0))
    tap.end_step()
    assert tap.pending() == [1.5, 2.5, 4.0]
    restored = TrainLossTap()
    restored.restore(tap.pending())  # a checkpoint's list of floats comes back as floats
    assert restored.take() == [1.5, 2.5, 4.0]
    assert tap.take() == [1.5, 2.5, 4.0] and tap.take() == []


def test_evaluation_forwards_are_not_training_losses():
    model, tap = LossModel(), TrainLossTap()
    tap.attach(model)
    model.eval()
    model(torch.tensor(9.0))
    tap.end_step()
    assert tap.pending() == [] and not tap.seen_any
    tap.detach()
    model.train()
    model(torch.tensor(1.0))
    tap.end_step()
    assert tap.pending() == [], "a detached tap reads nothing"


def test_a_loss_tensor_the_model_reuses_in_place_keeps_each_steps_value():
    class ReusedBuffer(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("loss", torch.zeros(()))

        def forward(self, value):
            self.loss.fill_(value)  # the same tensor every step
            return {"loss": self.loss}

    model, tap = ReusedBuffer().train(), TrainLossTap()
    tap.attach(model)
    for value in (1.0, 2.0, 3.0):
        model(value)
        tap.end_step()
    assert tap.pending() == [1.0, 2.0, 3.0]

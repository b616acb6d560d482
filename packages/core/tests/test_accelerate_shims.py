"""pa_core._accelerate_shims: the shortcuts around Accelerate's per-step overhead do what Accelerate would."""

import inspect
import warnings

import pytest
import torch
from accelerate import Accelerator
from accelerate.optimizer import AcceleratedOptimizer

from pa_core._accelerate_shims import optimizer_step_function, optimizer_zero_grad_function


def prepared_sgd():
    model = torch.nn.Linear(3, 2)
    optimizer = Accelerator(cpu=True).prepare(torch.optim.SGD(model.parameters(), lr=0.1))
    model(torch.ones(4, 3)).sum().backward()
    return model, optimizer


def test_zero_grad_asks_for_the_signature_once(monkeypatch):
    model, optimizer = prepared_sgd()
    zero_grad = optimizer_zero_grad_function(optimizer)

    def no_more_inspection(*args, **kwargs):
        raise AssertionError("inspect.signature called per step")

    monkeypatch.setattr(inspect, "signature", no_more_inspection)
    zero_grad()
    # Accelerate's default for optimizers that accept set_to_none: gradients become None.
    assert all(p.grad is None for p in model.parameters())


def test_zero_grad_of_an_optimizer_without_set_to_none():
    class OldStyle(torch.optim.SGD):
        def zero_grad(self):  # no set_to_none: Accelerate calls it without arguments
            for group in self.param_groups:
                for p in group["params"]:
                    p.grad.zero_()

    model = torch.nn.Linear(3, 2)
    optimizer = Accelerator(cpu=True).prepare(OldStyle(model.parameters(), lr=0.1))
    model(torch.ones(4, 3)).sum().backward()
    optimizer_zero_grad_function(optimizer)()
    assert all(p.grad is not None and not p.grad.any() for p in model.parameters())


@pytest.mark.parametrize("wrapped", [False, True])
def test_zero_grad_is_left_alone_where_it_means_something_else(wrapped):
    _, prepared = prepared_sgd()

    class EngineOwnsGradients(AcceleratedOptimizer):  # like Accelerate's DeepSpeed and Megatron-LM wrappers
        def zero_grad(self, set_to_none=None):
            pass

    optimizer = EngineOwnsGradients(prepared.optimizer, device_placement=False) if wrapped else prepared.optimizer
    assert optimizer_zero_grad_function(optimizer) == optimizer.zero_grad


def test_a_scheduler_made_after_the_step_function_sees_the_optimizer_step():
    # The step function is made when the run is prepared, the scheduler after: torch's scheduler
    # wraps optimizer.step then, and warns "lr_scheduler.step() before optimizer.step()" if its
    # wrapper is bypassed.
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    step = optimizer_step_function(optimizer)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    model(torch.ones(1, 2)).sum().backward()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == 0.05

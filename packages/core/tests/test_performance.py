"""Per-step costs that must not creep back: host synchronisations and pa's own Python calls.

Not timed: counts, which do not depend on the machine's load.
"""

import sys
from collections import Counter

import torch

from pa_core import Trainer, hookimpl
from pa_core.testing import CountHostSyncs, make_classification_dataset, tiny_classifier


def host_syncs_for_one_epoch(num_batches, callbacks=(), gradient_accumulation_steps=1):
    model = tiny_classifier()
    trainer = Trainer(
        model, torch.nn.CrossEntropyLoss(), torch.optim.SGD(model.parameters(), lr=0.1), callbacks=list(callbacks)
    )
    data = make_classification_dataset(num_samples=4 * num_batches)
    with CountHostSyncs() as counter:
        trainer.train(
            data,
            num_epochs=1,
            eval_dataset=data,
            per_device_batch_size=4,
            gradient_accumulation_steps=gradient_accumulation_steps,
        )
    return counter.count


def test_the_loop_reads_nothing_back_per_step():
    for ga in (1, 2):
        few, many = (
            host_syncs_for_one_epoch(4, gradient_accumulation_steps=ga),
            host_syncs_for_one_epoch(16, gradient_accumulation_steps=ga),
        )
        assert few == many, f"host synchronisations grow with the number of steps (GA {ga}): {few} vs {many}"


def test_the_sync_counter_sees_a_per_step_read():
    class ReadsLossEveryStep:
        @hookimpl
        def on_train_step_end(self, batch_output):
            batch_output["loss"].item()

    few = host_syncs_for_one_epoch(4, callbacks=[ReadsLossEveryStep()])
    many = host_syncs_for_one_epoch(16, callbacks=[ReadsLossEveryStep()])
    assert many - few == 12


def pa_calls_per_step(callbacks=()):
    """Python calls made by pa_core's own code per steady-state training step."""
    counts, steps = Counter(), [0]
    in_pa = "/pa_core/"

    def profile(frame, event, arg):
        if event == "call" and in_pa in frame.f_code.co_filename:
            counts[frame.f_code.co_name] += 1

    class Window:
        @hookimpl
        def on_train_step_start(self):
            steps[0] += 1
            if steps[0] == 10:
                sys.setprofile(profile)
            elif steps[0] == 30:
                sys.setprofile(None)

    model = tiny_classifier()
    trainer = Trainer(
        model,
        torch.nn.CrossEntropyLoss(),
        torch.optim.SGD(model.parameters(), lr=0.1),
        callbacks=[Window(), *callbacks],
    )
    trainer.train(make_classification_dataset(num_samples=4 * 40), num_epochs=1, per_device_batch_size=4)
    sys.setprofile(None)
    # The window's own hook and the profiler's bookkeeping are not pa's cost.
    counts.pop("on_train_step_start", None)
    return sum(counts.values()) / 20, counts


def test_pa_calls_per_step_are_pinned():
    per_step, counts = pa_calls_per_step()
    # Measured: 16 per step (3 event dispatches, the loss computation, the loss tracker, backward,
    # optimizer step and zero_grad, the update bookkeeping and the stop checks). A regression
    # shows here before it shows in a benchmark.
    assert per_step <= 16, counts

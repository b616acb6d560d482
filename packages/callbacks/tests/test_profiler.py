"""ProfilerCallback: real torch.profiler traces over a window of optimizer updates."""

import json

import pytest

from pa_callbacks import ProfilerCallback
from pa_core import hookimpl


class FailAtUpdate:
    def __init__(self, update):
        self.update = update

    @hookimpl
    def on_train_update_end(self, num_updates):
        if num_updates == self.update:
            raise RuntimeError("boom")


def profiled_steps(trace_file):
    """The ``ProfilerStep#N`` spans of a Chrome trace: the optimizer updates it recorded."""
    events = json.loads(trace_file.read_text())["traceEvents"]
    return sorted({int(e["name"].split("#")[1]) for e in events if e.get("name", "").startswith("ProfilerStep#")})


def test_a_window_of_updates_is_traced_and_the_top_operators_printed(make_trainer, train_data, tmp_path, capsys):
    callback = ProfilerCallback(tmp_path / "profile", wait=1, warmup=1, active=2, row_limit=5)
    trainer = make_trainer([callback])
    trainer.train(train_data, num_epochs=2, per_device_batch_size=8)  # 10 updates

    (trace,) = callback.traces
    assert trace.parent == tmp_path / "profile"
    # The name TensorBoard's profiler plugin reads (worker "rank0"), holding a Chrome trace.
    assert trace.name.startswith("rank0.") and trace.name.endswith(".pt.trace.json")
    assert profiled_steps(trace) == [2, 3]  # after 1 update skipped and 1 of warm-up
    out = capsys.readouterr().out
    assert "Top operators by self time" in out and "Self CPU" in out and "aten::" in out


def test_repeated_windows_write_one_trace_each(make_trainer, train_data, tmp_path):
    callback = ProfilerCallback(tmp_path / "profile", wait=0, warmup=1, active=1, repeat=3, row_limit=0)
    make_trainer([callback]).train(train_data, num_epochs=2, per_device_batch_size=8)
    assert [profiled_steps(trace) for trace in callback.traces] == [[1], [3], [5]]


def test_training_too_short_for_the_window_warns(make_trainer, train_data, tmp_path):
    callback = ProfilerCallback(tmp_path / "profile", wait=4, warmup=2, active=3)
    with pytest.warns(UserWarning, match="recorded nothing.*= 9 optimizer updates"):
        make_trainer([callback]).train(train_data, num_epochs=1, per_device_batch_size=8)  # 5 updates
    assert callback.traces == []


def test_a_failing_run_stops_the_profiler(make_trainer, train_data, tmp_path):
    failing = ProfilerCallback(tmp_path / "first", wait=0, warmup=1, active=3)
    with pytest.raises(RuntimeError, match="boom"):
        make_trainer([failing, FailAtUpdate(2)]).train(train_data, num_epochs=1, per_device_batch_size=8)
    # The next run can profile again (a profiler left running would refuse to start).
    second = ProfilerCallback(tmp_path / "second", wait=0, warmup=1, active=1, row_limit=0)
    make_trainer([second]).train(train_data, num_epochs=1, per_device_batch_size=8)
    assert len(second.traces) == 1


@pytest.mark.parametrize(("name", "value"), [("active", 0), ("wait", -1), ("repeat", 1.5), ("row_limit", None)])
def test_invalid_schedules_are_refused(name, value):
    with pytest.raises(ValueError, match=name):
        ProfilerCallback(**{name: value})

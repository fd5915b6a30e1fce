from __future__ import annotations

from mgft_train.progress import format_eta, format_step, reporter


def test_step_line_format():
    assert format_step(3, 20, 5.12341, 1.94e-4, 850.2) == \
        "step 3/20 loss 5.1234 lr 1.9e-04 tok/s 850"
    assert format_step(3, 20, 5.12341, 1.94e-4, 850.2, eta_s=3725) == \
        "step 3/20 loss 5.1234 lr 1.9e-04 tok/s 850 eta 1:02:05"
    assert format_eta(-1) == "0:00:00"


def test_a_step_that_evaluates_shows_the_eval_loss_after_the_training_loss():
    assert format_step(10, 20, 1.5, 1e-4, 850.0, eval_loss=1.75) == \
        "step 10/20 loss 1.5000 eval_loss 1.7500 lr 1.0e-04 tok/s 850"


def test_plain_lines_when_stdout_is_not_a_tty_and_nothing_when_disabled(capsys):
    with reporter(2, enabled=True) as report:
        report.step(1, 2, 1.0, 1e-3, 10.0)
        report.step(2, 2, 0.5, 1e-3, 20.0)
    with reporter(2, enabled=False) as report:
        report.step(1, 2, 1.0, 1e-3, 10.0)
    lines = capsys.readouterr().out.splitlines()
    assert [line.rsplit(" eta ", 1)[0] for line in lines] == [
        "step 1/2 loss 1.0000 lr 1.0e-03 tok/s 10", "step 2/2 loss 0.5000 lr 1.0e-03 tok/s 20"]
    assert lines[-1].endswith(" eta 0:00:00")  # nothing left after the last step


def test_eta_of_a_resumed_run_uses_only_its_own_steps(capsys, monkeypatch):
    import mgft_train.progress as progress

    clock = iter([100.0, 110.0])  # the reporter starts at 100; one step later it is 110
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    with reporter(10, enabled=True, start=5) as report:
        report.step(6, 10, 1.0, 1e-3, 10.0)
    assert capsys.readouterr().out.strip().endswith("eta 0:00:40")  # 4 steps left at 10 s

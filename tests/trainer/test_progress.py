from __future__ import annotations

from mgft_train.progress import format_step, reporter


def test_step_line_format():
    line = format_step(3, 20, 5.12341, 1.94e-4, 850.2)
    assert line == "step 3/20 loss 5.1234 lr 1.9e-04 tok/s 850"


def test_plain_lines_when_stdout_is_not_a_tty_and_nothing_when_disabled(capsys):
    with reporter(2, enabled=True) as report:
        report.step(1, 2, 1.0, 1e-3, 10.0)
        report.step(2, 2, 0.5, 1e-3, 20.0)
    with reporter(2, enabled=False) as report:
        report.step(1, 2, 1.0, 1e-3, 10.0)
    assert capsys.readouterr().out.splitlines() == [
        "step 1/2 loss 1.0000 lr 1.0e-03 tok/s 10", "step 2/2 loss 0.5000 lr 1.0e-03 tok/s 20"]

from __future__ import annotations

from mgft_train import curves


def scalars(logdir, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(logdir))
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


def test_tensorboard_gets_loss_lr_and_throughput_per_step(tmp_path):
    with curves.tensorboard(tmp_path, enabled=True) as board:
        for step, loss in enumerate([3.0, 2.0, 1.5], start=1):
            board.step(step, loss, lr=1e-3, tok_s=100.0 * step)
    logdir = tmp_path / curves.TENSORBOARD_DIR
    assert scalars(logdir, "train/loss") == [(1, 3.0), (2, 2.0), (3, 1.5)]
    assert [v for _, v in scalars(logdir, "train/tokens_per_s")] == [100.0, 200.0, 300.0]
    assert len(scalars(logdir, "train/lr")) == 3


def test_tensorboard_gets_the_eval_loss_where_it_was_measured(tmp_path):
    with curves.tensorboard(tmp_path, enabled=True) as board:
        board.eval(10, 2.5)
        board.eval(15, 2.25)
    assert scalars(tmp_path / curves.TENSORBOARD_DIR, "eval/loss") == [(10, 2.5), (15, 2.25)]


def test_other_ranks_write_no_events(tmp_path):
    with curves.tensorboard(tmp_path, enabled=False) as board:
        board.step(1, 1.0, lr=1e-3, tok_s=1.0)
    assert not (tmp_path / curves.TENSORBOARD_DIR).exists()


def test_loss_curve_is_a_png(tmp_path):
    path = curves.plot_loss([3.0, 2.0, 1.5, 1.2], tmp_path, "ddp lora")
    data = path.read_bytes()
    assert path.name == "loss.png"
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_loss_curve_draws_the_eval_points_as_a_second_curve():
    from matplotlib import pyplot as plt

    evals = [{"step": 2, "loss": 2.5}, {"step": 4, "loss": 2.0}, {"step": 5, "loss": 1.9}]
    fig = curves.loss_figure([3.0, 2.0, 1.5, 1.2, 1.1], "ddp lora", evals)
    train, held_out = fig.axes[0].get_lines()
    assert list(train.get_xdata()) == [1, 2, 3, 4, 5]
    assert list(held_out.get_xdata()) == [2, 4, 5]
    assert list(held_out.get_ydata()) == [2.5, 2.0, 1.9]
    assert held_out.get_label() == "held-out eval"
    plt.close(fig)
    fig = curves.loss_figure([3.0, 2.0], "ddp lora")  # no eval set: one curve
    assert [line.get_label() for line in fig.axes[0].get_lines()] == ["training"]
    plt.close(fig)

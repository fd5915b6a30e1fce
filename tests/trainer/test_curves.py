from __future__ import annotations

from mgft_train import curves


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

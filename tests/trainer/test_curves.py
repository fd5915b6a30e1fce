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


def test_other_ranks_write_no_events(tmp_path):
    with curves.tensorboard(tmp_path, enabled=False) as board:
        board.step(1, 1.0, lr=1e-3, tok_s=1.0)
    assert not (tmp_path / curves.TENSORBOARD_DIR).exists()


def test_loss_curve_is_a_png(tmp_path):
    path = curves.plot_loss([3.0, 2.0, 1.5, 1.2], tmp_path, "ddp lora")
    data = path.read_bytes()
    assert path.name == "loss.png"
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000

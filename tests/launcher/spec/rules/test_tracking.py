"""--report-to: one flag, several trackers, carried to the trainer as one argv word."""

from __future__ import annotations

import pytest
from mgft.contract.argv import parse_train, to_argv
from mgft.spec import validate
from mgft.spec.errors import SpecError

from tests.launcher.render import cases

K8S = {"backend": "k8s", "image": cases.IMAGE}


def test_default_is_tensorboard_as_before() -> None:
    assert [t.value for t in cases.spec().train.report_to] == ["tensorboard"]


@pytest.mark.parametrize("given", ["tensorboard,wandb", " tensorboard , wandb ",
                                   ["tensorboard", "wandb"]])
def test_several_trackers_reach_the_trainer_in_order(given) -> None:
    spec = cases.spec(**{"train.report_to": given})
    argv = to_argv(spec.train)
    assert "--report-to=tensorboard,wandb" in argv
    assert [t.value for t in parse_train(argv).report_to] == ["tensorboard", "wandb"]


@pytest.mark.parametrize("given,value,needle", [
    ("tensorboard,bogus", "bogus", "'tensorboard', 'wandb', 'mlflow' or 'none'"),
    ("none,wandb", "none,wandb", "pass --report-to none alone"),
    ("mlflow,mlflow", "mlflow,mlflow", "mlflow is named twice"),
])
def test_a_bad_list_names_the_flag_the_value_and_the_fix(given, value, needle) -> None:
    with pytest.raises(SpecError) as err:
        cases.spec(**{"train.report_to": given})
    assert err.value.field == "--report-to" and err.value.value == value
    assert needle in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("flags,warned", [
    ({"train.report_to": "wandb"}, True),
    ({"train.report_to": "wandb", "k8s.wandb_secret": "wandb"}, False),
    ({"train.report_to": "wandb", "k8s.secret_env": {"WANDB_API_KEY": "w:key"}}, False),
    ({"train.report_to": "wandb", "env.WANDB_MODE": "offline"}, False),
    ({"train.report_to": "tensorboard,mlflow"}, False),
])
def test_wandb_on_kubernetes_without_a_key_is_warned_about(flags, warned) -> None:
    found = [w for w in validate.warnings(cases.spec(**K8S | flags)) if "--wandb-secret" in w]
    assert bool(found) is warned


def test_no_key_warning_on_slurm_or_local_where_the_environment_carries_it() -> None:
    spec = cases.spec(**{"backend": "local", "train.report_to": "wandb"})
    assert not [w for w in validate.warnings(spec) if "wandb" in w]

import pytest
import torch

from trainer import ConfigError, DeviceError, TaskError, TrialConfig, resolve_device
from trainer.tasks import load_task


def test_auto_and_cpu() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else None
    assert resolve_device("auto").type in {expected or "mps", "cpu"}


def test_missing_cuda_is_a_clear_error() -> None:
    if torch.cuda.is_available():
        assert resolve_device("cuda:0").type == "cuda"
    else:
        with pytest.raises(DeviceError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(DeviceError):
        resolve_device("cuda:99" if torch.cuda.is_available() else "cuda:0")
    with pytest.raises(DeviceError, match="unknown device"):
        resolve_device("tpu")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"lambda_": -1.0}, "lambda"),
        ({"lambda_": float("nan")}, "lambda"),
        ({"penalty": "l3"}, "unknown penalty"),
        ({"penalty": "elastic_net", "l1_ratio": 1.5}, "l1_ratio"),
        ({"penalty": "l2", "l1_ratio": 0.5}, "elastic_net"),
        ({"epochs": 0}, "epochs"),
        ({"batch_size": -1}, "batch size"),
        ({"lr": 0.0}, "lr"),
        ({"optimizer": "lbfgs"}, "unknown optimizer"),
        ({"penalize": " , "}, "penalize"),
    ],
)
def test_invalid_configs(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TrialConfig(**changes)  # type: ignore[arg-type]


def test_params_round_trip() -> None:
    cfg = TrialConfig(
        penalty="elastic_net", lambda_=0.3, l1_ratio=0.2, task_options=(("noise", 0.1),)
    )
    assert TrialConfig.from_params(cfg.as_params()) == cfg.replace(data_seed=0)
    assert cfg.as_params()["lambda"] == 0.3 and cfg.as_params()["task.noise"] == 0.1


def test_task_errors() -> None:
    with pytest.raises(TaskError, match="unknown task"):
        load_task(TrialConfig(task="mnist"))
    with pytest.raises(TaskError, match="no option 'depth'"):
        load_task(TrialConfig(task_options=(("depth", 3),)))
    with pytest.raises(TaskError, match=">= 1"):
        load_task(TrialConfig(task_options=(("n_train", 0),)))

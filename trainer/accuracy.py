"""Final accuracy of a classification task's model on every split.

Reported once, at the end of training, beside the per-epoch METRICS rather than among them:
the METRICS list is the contract tracking stores per epoch for every task, and accuracy
exists only for classification tasks.
"""

from __future__ import annotations

import torch
from torch import nn

from trainer.result import ACCURACY_METRICS
from trainer.tasks import Split, Task


@torch.no_grad()
def split_accuracy(model: nn.Module, split: Split) -> float:
    predicted = model(split.X).argmax(dim=-1)
    return float((predicted == split.y.reshape(predicted.shape)).float().mean().item())


def final_accuracy(task: Task, model: nn.Module, device: torch.device) -> dict[str, float]:
    """{train,val,test}_accuracy for a classification task; {} for any other task."""
    if not task.classification:
        return {}
    splits = (task.train, task.val, task.test)
    values = [split_accuracy(model, s.to(device)) for s in splits]
    return dict(zip(ACCURACY_METRICS, values, strict=True))


def accuracy_of_state(
    task: Task, state_dict: dict[str, torch.Tensor], device: torch.device
) -> dict[str, float]:
    """The same from saved weights (batched training keeps no per-member module)."""
    if not task.classification or not state_dict:
        return {}
    model = task.make_model(torch.Generator())
    model.load_state_dict(state_dict)
    return final_accuracy(task, model.to(device), device)

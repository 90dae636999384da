"""Final accuracy of a classification task's model on every split.

Reported once, at the end of training, beside the per-epoch METRICS rather than among them:
the METRICS list is the contract tracking stores per epoch for every task, and accuracy
exists only for classification tasks. The model is evaluated in eval mode, streamed
splits chunk by chunk (trainer.data).
"""

from __future__ import annotations

import torch
from torch import nn

from trainer.data import Rows, chunked_mean, readers
from trainer.metrics import ACCURACY_METRICS
from trainer.tasks import Task


@torch.no_grad()
def split_accuracy(model: nn.Module, rows: Rows) -> float:
    def correct(X: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        predicted = model(X).argmax(dim=-1)
        hits: torch.Tensor = (predicted == y.reshape(predicted.shape)).float()
        return hits

    return float(chunked_mean(rows.chunks(), correct).item())


def final_accuracy(task: Task, model: nn.Module, device: torch.device) -> dict[str, float]:
    """{train,val,test}_accuracy for a classification task; {} for any other task."""
    if not task.classification:
        return {}
    model.eval()
    values = [split_accuracy(model, rows) for rows in readers(task, device)]
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

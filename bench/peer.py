"""The peer: the d2l sweep as a user would write it with Optuna and MLflow, no sweeps.

Optuna on SQLite, the validation loss reported every epoch for the pruner, and
optuna-integration's MLflowCallback logging each trial's parameters and value to MLflow.
Deliberately plain: it is the baseline `make bench` compares sweeps against.
"""

from __future__ import annotations

import torch
from torch import nn


def d2l_data(seed: int = 0) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    true_w, true_b, noise = torch.full((200, 1), 0.01), 0.05, 0.01
    X_train = torch.normal(0.0, 1.0, (20, 200), generator=gen)
    y_train = X_train @ true_w + true_b + torch.normal(0.0, noise, (20, 1), generator=gen)
    X_test = torch.normal(0.0, 1.0, (100, 200), generator=gen)
    y_test = X_test @ true_w + true_b + torch.normal(0.0, noise, (100, 1), generator=gen)
    return X_train, y_train, X_test, y_test


def run_peer(storage: str, tracking_uri: str, n_trials: int, epochs: int = 100) -> None:
    import optuna
    from optuna_integration.mlflow import MLflowCallback

    X_train, y_train, X_test, y_test = d2l_data()

    def objective(trial: optuna.Trial) -> float:
        penalty = trial.suggest_categorical("penalty", ["none", "l2", "weight_decay"])
        lam = trial.suggest_float("lambda", 1e-5, 100, log=True) if penalty != "none" else 0.0
        torch.manual_seed(0)
        model = nn.Linear(200, 1)
        nn.init.normal_(model.weight)
        nn.init.zeros_(model.bias)
        decay = lam if penalty == "weight_decay" else 0.0
        optimizer = torch.optim.SGD(model.parameters(), lr=0.003, weight_decay=decay)
        loss_fn = nn.MSELoss()
        val = float("inf")
        for epoch in range(epochs):
            for i in torch.split(torch.randperm(20), 5):
                loss = loss_fn(model(X_train[i]), y_train[i]) / 2
                if penalty == "l2":
                    loss = loss + lam / 2 * model.weight.pow(2).sum()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            with torch.no_grad():
                val = loss_fn(model(X_test), y_test).item() / 2
            trial.report(val, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return val

    study = optuna.create_study(
        storage=storage, sampler=optuna.samplers.TPESampler(seed=0), direction="minimize"
    )
    callback = MLflowCallback(tracking_uri=tracking_uri, metric_name="val_loss")
    study.optimize(objective, n_trials=n_trials, callbacks=[callback])

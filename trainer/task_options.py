"""The built-in tasks' options, declared once: the tasks check what they are given against
these specs, and the CLI makes its flags (`--n-train`, `--model`, ...) from them. No torch
here, so the CLI builds its flags, and a TOML file is checked, without importing it.
"""

from __future__ import annotations

from trainer.config import OptionSpec

D2L = "d2l-synthetic"
DIABETES = "diabetes"
DIGITS = "digits"
CSV = "csv"

MODELS = ("linear", "mlp", "cnn")  # cnn: image tasks only (digits, 8×8)
ACTIVATIONS = ("relu", "tanh", "gelu")  # trainer.models' functions, in this order

# The model options every task accepts (`--model`, `--hidden`, `--activation`, `--dropout`).
MODEL_OPTIONS: dict[str, OptionSpec] = {
    "model": OptionSpec(str, "linear", help="model family", choices=MODELS),
    "hidden": OptionSpec(str, "64", help="mlp hidden widths, e.g. 64,32 (cnn: channels, 8,16)"),
    "activation": OptionSpec(str, "relu", help="mlp/cnn activation", choices=ACTIVATIONS),
    "dropout": OptionSpec(
        float, 0.0, 0.0, "mlp/cnn dropout probability after the hidden layers", maximum=1
    ),
}
D2L_OPTIONS: dict[str, OptionSpec] = {
    # The maxima keep the generated data in memory (exclusive bounds).
    "n_train": OptionSpec(int, 20, 1, "training examples", maximum=10**7),
    "n_test": OptionSpec(int, 100, 1, "test examples", maximum=10**7),
    "num_inputs": OptionSpec(int, 200, 1, "input dimension", maximum=10**6),
    "noise": OptionSpec(float, 0.01, 0.0, "std of the label noise"),
    **MODEL_OPTIONS,  # `--model mlp` swaps the book's linreg for trainer.models' MLP
}
CSV_OPTIONS: dict[str, OptionSpec] = {
    "train_csv": OptionSpec(
        str, "", help="the training table (header; numeric features)", path=True
    ),
    "test_csv": OptionSpec(str, "", help="a test table; else the file is split", path=True),
    "target": OptionSpec(str, "", help="the column to predict"),
    "val_fraction": OptionSpec(float, 0.2, 0.0, "share of training rows for validation", None, 1),
    "test_fraction": OptionSpec(float, 0.2, 0.0, "share of rows for test, without --test-csv"),
    "standardize": OptionSpec(bool, True, help="scale features by training statistics"),
    "classification": OptionSpec(bool, False, help="cross-entropy on the target's labels"),
    **MODEL_OPTIONS,
}
TASK_OPTIONS: dict[str, dict[str, OptionSpec]] = {
    D2L: D2L_OPTIONS,
    DIABETES: MODEL_OPTIONS,
    DIGITS: MODEL_OPTIONS,
    CSV: CSV_OPTIONS,
}


def option_names() -> list[str]:
    """Every built-in task's option names, each once, in the order they are declared."""
    return list(dict.fromkeys(name for specs in TASK_OPTIONS.values() for name in specs))


def splits_table(task: str) -> bool:
    """Whether the task splits one table into train/validation/test (so a config's
    `split_seed` draws a new split), rather than drawing its data from the data seed."""
    return task in (DIABETES, DIGITS, CSV)

"""The names of what training measures, the one list tracking stores too. No torch here:
tracking and the CLI's queries import it without loading torch."""

# Per-epoch metrics, in the order they are recorded. Losses are data losses (no penalty).
METRICS = ("train_loss", "val_loss", "test_loss", "w_norm", "penalty_value")
# Final-only metrics of classification tasks (trainer.accuracy); None for other tasks.
ACCURACY_METRICS = ("train_accuracy", "val_accuracy", "test_accuracy")

"""What the fenced modules that use another library's private names share
(`sweeps._optuna` for Optuna, `tracking._mlflow_sql` for MLflow): the switch that forces the
library's public API, and the one warning a fallback to it gives."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field


@dataclass
class PrivateNames:
    """One library's private names, as this project uses them: `force_public_env`=1 takes
    the public API everywhere, silently; a fallback for any other reason is announced once
    per process and `what` (at WARNING, on `logger`)."""

    library: str
    force_public_env: str
    logger: logging.Logger
    warned: set[str] = field(default_factory=set)

    def public_forced(self) -> bool:
        """Whether the environment asks for the library's public API everywhere."""
        return os.environ.get(self.force_public_env) == "1"

    def warn_once(self, what: str, reason: str) -> None:
        """Announces, once per process and `what`, that `what` takes the public API."""
        if what not in self.warned:
            self.warned.add(what)
            self.logger.warning(
                "sweeps: %s uses %s's public API (slower): %s", what, self.library, reason
            )

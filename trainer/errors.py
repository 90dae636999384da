"""Typed errors of the trainer; the CLI turns each into one line on stderr and exit code 2."""


class TrainerError(Exception):
    """Base class: something the user asked for cannot be done."""


class ConfigError(TrainerError, ValueError):
    """A configuration value is invalid."""


class DeviceError(TrainerError):
    """The requested device does not exist on this machine."""


class AllocationError(TrainerError):
    """The task's data or model is larger than this machine can hold."""


class TaskError(TrainerError):
    """A task name, task option or task data is invalid."""

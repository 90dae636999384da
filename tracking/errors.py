"""Typed errors of tracking; the CLI shows each as one line with exit code 2."""


class TrackingError(Exception):
    """A tracking store cannot do what was asked."""


class UnknownStudyError(TrackingError, LookupError):
    """No study of that name in the store."""


class StoreFileError(TrackingError):
    """A store's file is damaged, another program's, or not writable."""

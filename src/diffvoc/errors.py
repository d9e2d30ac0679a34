"""Typed exceptions. The CLI turns every :class:`DiffvocError` into one line on stderr."""


class DiffvocError(Exception):
    """Base class for every error diffvoc raises on bad input."""


class AudioError(DiffvocError):
    """An audio file is missing, empty, corrupt or not audio."""


class MelError(DiffvocError):
    """A mel-spectrogram has the wrong shape, band count or non-finite values."""


class ConfigError(DiffvocError):
    """A configuration value is invalid or unknown."""


class CheckpointError(DiffvocError):
    """A checkpoint is missing, corrupt or does not match the configuration."""


class ScheduleError(DiffvocError):
    """A noise schedule is invalid or outside the training schedule's range."""


class TrainingError(DiffvocError):
    """Training hit a non-finite loss or an unusable data set."""

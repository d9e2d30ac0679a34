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


_OS_REASONS = {
    "ENOSPC": "no space left on the device",
    "EDQUOT": "disk quota exceeded",
    "EFBIG": "file too large for this file system or process limit",
    "EACCES": "permission denied",
    "EPERM": "operation not permitted",
    "EROFS": "read-only file system",
    "ENOENT": "no such file or folder",
    "ENOTDIR": "a part of the path is not a folder",
    "EISDIR": "it is a folder",
    "EEXIST": "it already exists",
    "ENAMETOOLONG": "file name too long",
    "ELOOP": "too many levels of symbolic links",
    "EMFILE": "too many open files",
    "ENOTEMPTY": "folder not empty",
    "EXDEV": "cannot rename across file systems",
    "EIO": "input/output error",
}


def describe_os_error(e: OSError, path: object | None = None, action: str = "") -> str:
    """One line for an operating-system error: ``"<action> <path>: <reason>"``, the path named once.

    ``path`` defaults to the error's own file name; the reason comes from a fixed table of errno names
    (disk full, permissions, wrong kind of path, ...) and falls back to the system's message."""
    import errno as _errno

    name = _errno.errorcode.get(e.errno or -1, "")
    reason = _OS_REASONS.get(name) or e.strerror or str(e) or type(e).__name__
    target = path if path is not None else e.filename
    other = e.filename2 if getattr(e, "filename2", None) not in (None, target) else None
    head = " ".join(str(p) for p in (action, target) if p not in (None, ""))
    line = f"{head}: {reason}" if head else reason
    return line + (f" ({other})" if other is not None and str(other) not in line else "")


def with_path(path: object, message: str) -> str:
    """``"<path>: <message>"``, unless ``message`` already names ``path`` (error lines name a path once)."""
    return message if str(path) in message else f"{path}: {message}"

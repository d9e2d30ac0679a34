"""File input and output: atomic writes (one file, one folder or a set of files), safe YAML/JSON/text
reads, and the checks every output passes before it is written.

Reliability rules kept here, once, for the whole package:

* every write goes to a temporary name beside its target (``.<name>.tmp-<pid>-<random>``) and is renamed
  into place on success; temporaries of a process that died (``kill -9``) are removed by
  :func:`remove_debris` on the next start of whoever owns the folder;
* written files get the umask's ordinary mode (0644 under umask 022), whatever the library that wrote
  them chose (``tempfile.mkstemp`` and safetensors make 0600);
* an operating-system error while writing becomes a :class:`DiffvocError` naming the target;
* every YAML read refuses aliases/anchors (billion-laughs documents) and documents over a size limit;
  text that is not UTF-8 is a one-line error naming the file;
* every waveform is checked finite before it is written (:func:`check_waveform`).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import platform
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import yaml

from diffvoc.errors import AudioError, DiffvocError, describe_os_error

YAML_MAX_BYTES = 4 << 20
"""The largest YAML document read by default (configs, statistics, checkpoint side files)."""
JSON_MAX_BYTES = 64 << 20
"""The largest JSON document read by default (results tables, training state)."""
_TMP_TAG = ".tmp-"


def plain(obj, nan_as_none: bool = False):
    """Nested data as plain YAML/JSON types: tensors and arrays become lists, numpy scalars Python
    numbers, str subclasses str; with ``nan_as_none``, non-finite floats become ``None`` (JSON has no NaN)."""
    if isinstance(obj, dict):
        return {str(k): plain(v, nan_as_none) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v, nan_as_none) for v in obj]
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):  # torch.Tensor, np.ndarray, np.generic
        return plain(obj.tolist(), nan_as_none)
    if isinstance(obj, str):
        return str(obj)
    if nan_as_none and isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def cpu_name() -> str:
    """The CPU's model name (for benchmark and evaluation records)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


_IMPORTED_AT = time.time()


def process_start_time() -> float:
    """When this process started (``time.time()`` seconds): from /proc on Linux, else the time
    this module was first imported."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = int(fields[19])  # field 22 (starttime), counted after the command name
        with open("/proc/stat") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return _IMPORTED_AT


# ---------------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------------


def read_text(path: str | Path, what: str = "file", max_bytes: int | None = None,
              error: type[DiffvocError] = DiffvocError) -> str:
    """The UTF-8 text of ``path``; a missing, wrong-kind, over-large or undecodable file is one ``error``."""
    p = Path(path)
    if not p.exists():
        raise error(f"no such {what}: {p}")
    if not p.is_file():
        raise error(f"{p} is not a file (a {what} was expected)")
    if max_bytes is not None and p.stat().st_size > max_bytes:
        raise error(f"{p}: the {what} is {p.stat().st_size} bytes, more than the {max_bytes} allowed")
    try:
        return p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{p}: the {what} is not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise error(describe_os_error(e, p, "cannot read")) from None


class _NoAliasLoader(yaml.SafeLoader):
    """PyYAML's safe loader without anchors and aliases (a few bytes of nested aliases can expand to
    gigabytes: the "billion laughs" document)."""

    def compose_node(self, parent, index):  # noqa: ANN001 - PyYAML's signature
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise yaml.constructor.ConstructorError(None, None, "YAML anchors and aliases (&, *) are not allowed",
                                                    event.start_mark)
        return super().compose_node(parent, index)


def parse_yaml(text: str, where: str = "YAML", error: type[DiffvocError] = DiffvocError,
               max_bytes: int = YAML_MAX_BYTES) -> Any:
    """Parse one YAML document safely: no aliases/anchors, at most ``max_bytes``; errors name ``where``."""
    if len(text.encode("utf-8", "surrogatepass")) > max_bytes:
        raise error(f"{where}: more than {max_bytes} bytes of YAML")
    try:
        return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        raise error(f"{where}: not valid YAML ({str(e).splitlines()[0]})") from None
    except RecursionError:
        raise error(f"{where}: YAML nested too deeply") from None


def load_yaml(path: str | Path, what: str = "YAML file", error: type[DiffvocError] = DiffvocError,
              max_bytes: int = YAML_MAX_BYTES) -> Any:
    """Read a YAML file with :func:`parse_yaml` (the one YAML reader of the package)."""
    return parse_yaml(read_text(path, what, max_bytes, error), str(path), error, max_bytes)


class _NoAliasDumper(yaml.SafeDumper):
    """PyYAML's safe dumper that never writes anchors/aliases (which :func:`parse_yaml` refuses)."""

    def ignore_aliases(self, data: Any) -> bool:  # noqa: ARG002 - PyYAML's signature
        return True


def dump_yaml(obj: Any, sort_keys: bool = True) -> str:
    """``obj`` as YAML without anchors or aliases (shared objects are written out in full)."""
    return yaml.dump(obj, Dumper=_NoAliasDumper, sort_keys=sort_keys, allow_unicode=True)


def load_json(path: str | Path, what: str = "JSON file", error: type[DiffvocError] = DiffvocError,
              max_bytes: int = JSON_MAX_BYTES) -> Any:
    """Read a JSON file; a missing, over-large, undecodable or unparsable one is one ``error``."""
    text = read_text(path, what, max_bytes, error)
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as e:
        raise error(f"{path}: the {what} is not valid JSON ({str(e).splitlines()[0][:120]})") from None


# ---------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def normal_mode(path: str | Path, folder: bool = False) -> None:
    """Give ``path`` the mode a plain ``open``/``mkdir`` would (0666/0777 less the umask)."""
    os.chmod(path, (0o777 if folder else 0o666) & ~_umask())


def _tmp_prefix(path: Path) -> str:
    return f".{path.name}{_TMP_TAG}{os.getpid()}-"


def check_writable(path: Path) -> Path:
    """Refuse (one :class:`DiffvocError`) to write ``path`` when its folder is missing, not a folder or not
    writable, or ``path`` is a folder; returns the folder."""
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        what = f"{parent} is not a folder" if parent.exists() else f"folder {parent} does not exist"
        raise DiffvocError(f"cannot write {path}: {what}")
    if not os.access(parent, os.W_OK):
        raise DiffvocError(f"cannot write {path}: folder {parent} is not writable")
    if path.is_dir():
        raise DiffvocError(f"cannot write {path}: it is a folder")
    return parent


@contextlib.contextmanager
def _write_errors(path: Path) -> Iterator[None]:
    """Operating-system errors of writing ``path`` (disk full, permissions, ...) as one :class:`DiffvocError`."""
    try:
        yield
    except OSError as e:
        raise DiffvocError(describe_os_error(e, path, "cannot write")) from None
    except sf.LibsndfileError as e:
        raise DiffvocError(f"cannot write {path}: {e.error_string}") from None


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success it is renamed to ``path``.

    On any exception the temporary file is removed and ``path`` is left untouched; an
    operating-system error becomes a :class:`DiffvocError` naming ``path``.
    """
    path = Path(path)
    parent = check_writable(path)
    with _write_errors(path):
        fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(path), suffix=suffix or path.suffix, dir=parent)
        os.close(fd)
    tmp_path = Path(tmp)
    try:
        with _write_errors(path):
            normal_mode(tmp_path)  # mkstemp makes 0600; give the file the usual permissions
            yield tmp_path
            normal_mode(tmp_path)  # the writer may have replaced the file
            os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_save_npy(path: str | Path, array: np.ndarray) -> None:
    """Save ``array`` as ``.npy`` atomically."""
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, array)


def check_waveform(audio: np.ndarray, what: str = "output audio") -> None:
    """Raise :class:`AudioError` unless ``audio`` is a non-empty, finite 1-D waveform (checked before any write:
    a model with broken weights or an out-of-range input must not end as a file of silence and exit 0)."""
    a = np.asarray(audio)
    if a.ndim != 1 or a.size == 0:
        raise AudioError(f"{what}: expected a non-empty mono waveform, got shape {tuple(a.shape)}")
    if not np.issubdtype(a.dtype, np.floating) and not np.issubdtype(a.dtype, np.integer):
        raise AudioError(f"{what}: expected numbers, got dtype {a.dtype}")
    if not np.isfinite(a).all():
        bad = int(np.count_nonzero(~np.isfinite(a)))
        raise AudioError(f"{what}: {bad} of {a.size} samples are NaN or infinite (nothing written)")


def atomic_write_wav(path: str | Path, audio: np.ndarray, sample_rate: int, subtype: str = "PCM_16") -> None:
    """Write mono float audio in [-1, 1] as a wav (16-bit PCM by default), after :func:`check_waveform`."""
    check_waveform(audio, f"audio for {path}")
    if not (isinstance(sample_rate, (int, np.integer)) and 0 < sample_rate <= 2**31 - 1):
        raise AudioError(f"cannot write {path}: sample rate must be a positive whole number, got {sample_rate!r}")
    data = wav_bytes(audio, sample_rate, subtype)
    with atomic_path(path, suffix=".wav") as tmp:
        tmp.write_bytes(data)


def wav_bytes(audio: np.ndarray, sample_rate: int, subtype: str = "PCM_16") -> bytes:
    """A mono wav file's bytes. Rendered in memory and written by Python, so that a full disk or a file-size
    limit is an ``OSError`` with its errno (libsndfile reports only "System error")."""
    buf = io.BytesIO()
    sf.write(buf, np.clip(audio, -1.0, 1.0), int(sample_rate), subtype=subtype, format="WAV")
    return buf.getvalue()


def _normalise_modes(folder: Path) -> None:
    """Files and folders under ``folder`` (itself included) get the umask's ordinary modes."""
    normal_mode(folder, folder=True)
    for root, dirs, files in os.walk(folder):
        for d in dirs:
            normal_mode(Path(root) / d, folder=True)
        for f in files:
            p = Path(root) / f
            if not p.is_symlink():
                normal_mode(p)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it replaces ``path`` as a whole.

    Every file written into it gets the umask's ordinary mode (safetensors writes 0600)."""
    path = Path(path)
    with _write_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() and not path.is_dir():
            raise DiffvocError(f"cannot write folder {path}: a file of that name exists")
        tmp = Path(tempfile.mkdtemp(prefix=_tmp_prefix(path), dir=path.parent))
    try:
        with _write_errors(path):
            yield tmp
            _normalise_modes(tmp)
            if path.exists():
                old = path.with_name(f".{path.name}.old{_TMP_TAG}{os.getpid()}-{tmp.name[-8:]}")
                os.replace(path, old)
                os.replace(tmp, path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


class FileSet:
    """The files of one :func:`atomic_files` transaction: ``stage(target)`` gives the temporary path to
    write ``target`` to; nothing is visible under the target names until the whole set is written."""

    def __init__(self) -> None:
        self.staged: list[tuple[Path, Path]] = []
        self._stack = contextlib.ExitStack()

    def stage(self, target: str | Path, suffix: str = "") -> Path:
        """A temporary path beside ``target`` (renamed to it when the transaction commits)."""
        target = Path(target)
        if any(t == target for t, _ in self.staged):
            raise DiffvocError(f"{target} would be written twice")
        parent = check_writable(target)
        with _write_errors(target):
            fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(target), suffix=suffix or target.suffix, dir=parent)
            os.close(fd)
        self.staged.append((target, Path(tmp)))
        return Path(tmp)

    def write_text(self, target: str | Path, text: str) -> None:
        """Stage ``text`` for ``target``."""
        tmp = self.stage(target)
        with _write_errors(target):
            tmp.write_text(text, encoding="utf-8")

    def write_wav(self, target: str | Path, audio: np.ndarray, sample_rate: int, subtype: str = "PCM_16") -> None:
        """Stage a wav for ``target`` (checked with :func:`check_waveform` first)."""
        check_waveform(audio, f"audio for {target}")
        data = wav_bytes(audio, sample_rate, subtype)
        tmp = self.stage(target, ".wav")
        with _write_errors(target):
            tmp.write_bytes(data)

    def _commit(self) -> None:
        for target, tmp in self.staged:
            with _write_errors(target):
                normal_mode(tmp)
        for target, tmp in self.staged:  # renames only: each one atomic, none can run out of space
            with _write_errors(target):
                os.replace(tmp, target)

    def _abort(self) -> None:
        for _, tmp in self.staged:
            with contextlib.suppress(OSError):
                tmp.unlink()


@contextlib.contextmanager
def atomic_files() -> Iterator[FileSet]:
    """Write several files as one set: every file is written aside first (``FileSet.stage``), and only when
    all of them are complete are they renamed into place; on any error none of them appears."""
    files = FileSet()
    try:
        yield files
        files._commit()
    except BaseException:
        files._abort()
        raise


_DEBRIS = re.compile(r"^\..+" + re.escape(_TMP_TAG) + r"(\d+)-")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: someone else's live process
        return True
    return True


def remove_debris(folder: str | Path) -> list[Path]:
    """Remove the temporaries our atomic writers left in ``folder`` when their process was killed (``kill -9``):
    ``.<name>.tmp-<pid>-*`` files and folders whose process is no longer alive. Returns what was removed."""
    folder = Path(folder)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        m = _DEBRIS.match(p.name)
        if m is None or _alive(int(m.group(1))):
            continue
        with contextlib.suppress(OSError):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
            removed.append(p)
    return removed


__all__ = ["YAML_MAX_BYTES", "JSON_MAX_BYTES", "FileSet", "atomic_dir", "atomic_files", "atomic_path",
           "atomic_save_npy", "atomic_write_text", "atomic_write_wav", "check_waveform", "cpu_name", "load_json",
           "check_writable", "discard_new", "dump_yaml", "output_folder",
           "load_yaml", "normal_mode", "parse_yaml", "plain", "process_start_time", "read_text", "remove_debris"]


@contextlib.contextmanager
def output_folder(path: str | Path) -> Iterator[Path]:
    """Make sure the folder ``path`` exists for the body; if the body fails, remove the folders this
    created (so a failed command leaves no empty output folder behind)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise DiffvocError(f"{path} exists and is not a folder")
    created = []
    p = path
    while not p.exists():
        created.append(p)
        if p.parent == p:
            break
        p = p.parent
    with _write_errors(path):
        path.mkdir(parents=True, exist_ok=True)
    try:
        yield path
    except BaseException:
        for c in created:  # innermost first; only if still empty
            with contextlib.suppress(OSError):
                c.rmdir()
        raise


@contextlib.contextmanager
def discard_new(path: str | Path, unless: str | None = None) -> Iterator[Path]:
    """For the body, ``path`` is an output folder a command may create; if the body fails and ``path`` did not
    exist before (and ``path/unless`` does not exist, e.g. a first checkpoint), the folder is removed whole."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise DiffvocError(f"{path} exists and is not a folder")
    fresh = not path.exists()
    try:
        yield path
    except BaseException:
        if fresh and path.is_dir() and not (unless and (path / unless).exists()):
            shutil.rmtree(path, ignore_errors=True)
        raise

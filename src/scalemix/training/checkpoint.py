"""Checkpoints that survive a kill at any moment: atomic writes, checksums, fallback.

A checkpoint is a directory ``<root>/step_<step:08d>/`` holding

- ``<name>.safetensors`` for every weight set (e.g. ``model``, ``ema``),
- ``training_state.pt`` (optimiser, learning-rate schedule, RNG and step state; loaded
  with ``torch.load(weights_only=True)``),
- ``manifest.json``: the step and the size and SHA-256 of every other file.

Writing (:func:`save_checkpoint`) goes to a hidden temporary directory in ``root``;
every file is flushed and ``fsync``-ed, the manifest is written last, and one
``os.replace`` renames the directory into place (then the parent directory is
``fsync``-ed). A process killed at any point therefore leaves either the previous set of
complete checkpoints or the new one, never a half-written ``step_*`` directory; stale
temporary directories are removed by the next save. After a save only the newest
``keep`` complete checkpoints remain.

Reading (:func:`load_checkpoint`) checks the manifest first: a missing, truncated or
altered file raises :class:`CheckpointError` naming it. :func:`find_latest_checkpoint`
walks back from the newest checkpoint to the newest *valid* one, warning about each one
it skips, so a resume falls back to the previous complete checkpoint.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "find_latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "save_checkpoint",
    "verify_checkpoint",
]

MANIFEST_FILE = "manifest.json"
STATE_FILE = "training_state.pt"
_PREFIX = "step_"
_TMP_PREFIX = ".tmp-"


class CheckpointError(ValueError):
    """A checkpoint is missing a file, or a file is truncated or corrupted.

    The message names the offending file.
    """


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint.

    Attributes:
        path: its directory.
        step: the training step it was saved at.
        weights: ``name -> state dict`` of every ``<name>.safetensors`` file.
        state: the contents of ``training_state.pt``.
    """

    path: Path
    step: int
    weights: dict[str, dict[str, Tensor]]
    state: dict[str, Any]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write(path: Path, data: bytes) -> dict[str, Any]:
    """Write ``data`` durably; return its manifest entry (size and SHA-256)."""
    with path.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _step_of(path: Path) -> int | None:
    name = path.name
    if not name.startswith(_PREFIX) or not name[len(_PREFIX) :].isdigit():
        return None
    return int(name[len(_PREFIX) :])


def list_checkpoints(root: str | Path) -> list[Path]:
    """Checkpoint directories under ``root`` that hold a manifest, oldest step first.

    A directory listed here was renamed into place after all its files were written; use
    :func:`verify_checkpoint` to check its files against the manifest.
    """
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _step_of(p) is not None and (p / MANIFEST_FILE).is_file()]
    return sorted(found, key=lambda p: _step_of(p) or 0)


def save_checkpoint(
    root: str | Path,
    step: int,
    *,
    weights: Mapping[str, Mapping[str, Tensor]],
    state: Mapping[str, Any],
    keep: int | None = 3,
    on_file_written: Callable[[Path], None] | None = None,
) -> Path:
    """Write ``<root>/step_<step:08d>/`` atomically and keep the newest ``keep``.

    Args:
        root: checkpoint directory (created if missing).
        step: training step (>= 0).
        weights: ``name -> state dict``; each becomes ``<name>.safetensors`` (tensors are
            copied to the CPU and made contiguous).
        state: anything ``torch.load(weights_only=True)`` can read back (tensors, numbers,
            strings, lists, dicts); written to ``training_state.pt``.
        keep: complete checkpoints left after this save (``None``: all).
        on_file_written: called with the temporary path of every file once it is
            written and synced (before the directory is renamed into place), e.g. to
            report progress or to inject faults in tests.

    Returns:
        The checkpoint directory.

    Raises:
        ValueError: a negative ``step``, ``keep < 1``, or a weight name that is not a
            plain file stem.
    """
    from safetensors.torch import save as save_safetensors

    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step must be an int >= 0, got {step!r}")
    if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 1):
        raise ValueError(f"keep must be None or an int >= 1, got {keep!r}")
    for name in weights:
        if not name or "/" in name or name.startswith(".") or name == STATE_FILE[:-3]:
            raise ValueError(f"weights: {name!r} is not a valid file stem")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(_TMP_PREFIX + "*"):
        shutil.rmtree(stale, ignore_errors=True)
    final = root / f"{_PREFIX}{step:08d}"
    tmp = root / f"{_TMP_PREFIX}{final.name}-{os.getpid()}"
    tmp.mkdir()
    files: dict[str, dict[str, Any]] = {}

    def put(name: str, data: bytes) -> None:
        files[name] = _write(tmp / name, data)
        if on_file_written is not None:
            on_file_written(tmp / name)

    for name, tensors in weights.items():
        cpu = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        put(f"{name}.safetensors", save_safetensors(cpu, metadata={"step": str(step)}))
    buffer = io.BytesIO()
    torch.save(dict(state), buffer)
    put(STATE_FILE, buffer.getvalue())
    manifest = {"step": step, "files": files}
    put(MANIFEST_FILE, (json.dumps(manifest, indent=1) + "\n").encode())
    _fsync_dir(tmp)
    if final.exists():  # the same step saved again: move the old one out of the way first
        old = root / f"{_TMP_PREFIX}old-{final.name}-{os.getpid()}"
        os.replace(final, old)
        shutil.rmtree(old, ignore_errors=True)
    os.replace(tmp, final)
    _fsync_dir(root)
    if keep is not None:
        for old_ckpt in list_checkpoints(root)[:-keep]:
            shutil.rmtree(old_ckpt, ignore_errors=True)
    return final


def verify_checkpoint(path: str | Path) -> dict[str, Any]:
    """Check every file of a checkpoint against its manifest; return the manifest.

    Raises:
        CheckpointError: the manifest or a file is missing, unreadable, of the wrong
            size or with the wrong SHA-256; the message names the file.
    """
    path = Path(path)
    manifest_path = path / MANIFEST_FILE
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
        step = manifest["step"]
        if not isinstance(files, dict) or not isinstance(step, int):
            raise TypeError("bad field types")
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"checkpoint manifest {manifest_path} is unreadable: {err}") from err
    for name, entry in files.items():
        file = path / name
        try:
            data = file.read_bytes()
        except OSError as err:
            raise CheckpointError(f"checkpoint file {file} is missing or unreadable") from err
        if len(data) != entry["size"]:
            raise CheckpointError(
                f"checkpoint file {file} is truncated or altered: {len(data)} bytes, "
                f"the manifest says {entry['size']}"
            )
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise CheckpointError(f"checkpoint file {file} is corrupted: its SHA-256 differs")
    return dict(manifest)


def load_checkpoint(
    path: str | Path, *, map_location: str | torch.device = "cpu", verify: bool = True
) -> Checkpoint:
    """Verify (:func:`verify_checkpoint`) and load a checkpoint directory.

    Args:
        path: a ``step_*`` directory written by :func:`save_checkpoint`.
        map_location: device of the loaded tensors.
        verify: check the files against the manifest first (skip only when the caller
            has just done so, e.g. through :func:`find_latest_checkpoint`).

    Raises:
        CheckpointError: a missing, truncated or corrupted file (named).
    """
    from safetensors.torch import load as load_safetensors

    path = Path(path)
    if verify:
        manifest = verify_checkpoint(path)
    else:
        try:
            manifest = json.loads((path / MANIFEST_FILE).read_text())
        except (OSError, ValueError) as err:
            raise CheckpointError(f"checkpoint manifest {path / MANIFEST_FILE}: {err}") from err
    weights: dict[str, dict[str, Tensor]] = {}
    state: dict[str, Any] = {}
    for name in manifest["files"]:
        file = path / name
        try:
            if name.endswith(".safetensors"):
                loaded = load_safetensors(file.read_bytes())
                weights[name[: -len(".safetensors")]] = {
                    k: v.to(map_location) for k, v in loaded.items()
                }
            elif name == STATE_FILE:
                state = torch.load(file, map_location=map_location, weights_only=True)
        except Exception as err:  # a file that matches its hash but does not parse
            raise CheckpointError(f"checkpoint file {file} cannot be read: {err}") from err
    return Checkpoint(path, int(manifest["step"]), weights, state)


def find_latest_checkpoint(root: str | Path) -> Path | None:
    """The newest checkpoint under ``root`` whose files match their manifest.

    Each newer checkpoint that fails :func:`verify_checkpoint` is skipped with a
    ``UserWarning`` naming the bad file. Returns ``None`` when ``root`` holds no
    checkpoint at all.

    Raises:
        CheckpointError: checkpoints exist but none is valid.
    """
    found = list_checkpoints(root)
    errors = []
    for path in reversed(found):
        try:
            verify_checkpoint(path)
        except CheckpointError as err:
            errors.append(str(err))
            warnings.warn(f"skipping a damaged checkpoint: {err}", UserWarning, stacklevel=2)
            continue
        return path
    if errors:
        raise CheckpointError(f"no valid checkpoint in {root}: " + "; ".join(errors))
    return None

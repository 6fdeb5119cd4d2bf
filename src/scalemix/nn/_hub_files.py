"""The files of a saved model: their names, where they are, and the huggingface_hub mixin.

huggingface_hub and safetensors are imported only inside the functions, so that
``import scalemix`` does not need them; :func:`require_hub` turns their absence into an
``ImportError`` naming the extra.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, cast

from torch import nn

__all__ = [
    "CONFIG_NAME",
    "DEGRADATION_CONFIG_NAME",
    "SCHEDULER_CONFIG_NAME",
    "WEIGHTS_NAME",
    "hub_io",
    "is_local",
    "require_hub",
    "resolve_file",
]

#: the model's constructor arguments (the mixin's file name)
CONFIG_NAME = "config.json"
#: the model's state dict (the mixin's file name)
WEIGHTS_NAME = "model.safetensors"
#: the diffusion process, as a diffusers scheduler config (diffusers' file name)
SCHEDULER_CONFIG_NAME = "scheduler_config.json"
#: the constructor arguments of a :class:`~scalemix.degradation.ScaleSpaceDegradation`
DEGRADATION_CONFIG_NAME = "degradation_config.json"


def require_hub() -> None:
    """Raise an ``ImportError`` naming the extra unless huggingface_hub and safetensors import."""
    try:
        import huggingface_hub  # noqa: F401
        import safetensors  # noqa: F401
    except ImportError as err:
        raise ImportError(
            "saving and loading pretrained models needs huggingface_hub and safetensors: "
            "pip install 'scalemix[hub]'"
        ) from err


class FromConfig(Protocol):
    """A model class as :func:`hub_io` builds it: its name and ``from_config``."""

    __name__: str

    def from_config(self, config: Mapping[str, Any]) -> Any:
        """A freshly initialised model of the architecture in ``config``."""


def is_local(path_or_id: str | os.PathLike[str]) -> bool:
    """Whether ``path_or_id`` names a local folder (else a Hub repository id).

    A ``Path``, or a string that starts like a path (``/``, ``.``, ``~``), must be an
    existing folder: it is never sent to the Hub.
    """
    text = os.fspath(path_or_id)
    if os.path.isdir(text):
        return True
    if isinstance(path_or_id, os.PathLike) or text.startswith(("/", ".", "~", "\\")):
        raise FileNotFoundError(f"no folder {text!r} (a saved model is a folder)")
    return False


def resolve_file(path_or_id: str | os.PathLike[str], filename: str, **hub: Any) -> str | None:
    """The local path of ``filename`` in a saved folder or a Hub repository, or ``None``.

    A local folder is read as it is (offline); a repository id is resolved by
    :func:`huggingface_hub.hf_hub_download` with the keyword arguments ``hub``
    (``revision``, ``cache_dir``, ``force_download``, ``local_files_only``, ``token``).
    """
    if is_local(path_or_id):
        path = os.path.join(os.fspath(path_or_id), filename)
        return path if os.path.isfile(path) else None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        cached: str = hf_hub_download(repo_id=os.fspath(path_or_id), filename=filename, **hub)
    except EntryNotFoundError:
        return None
    return cached


def _load_weights(model: nn.Module, path: str, map_location: str) -> None:
    """Load ``model.safetensors`` into ``model`` strictly, in the file's floating dtype."""
    import safetensors.torch
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        dtypes = {f.get_slice(key).get_dtype() for key in f.keys()}  # noqa: SIM118
    floating = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16"}
    kinds = {floating[d] for d in dtypes if d in floating}
    if len(kinds) == 1:
        import torch

        model.to(dtype=getattr(torch, kinds.pop()))
    try:
        safetensors.torch.load_model(model, path, strict=True, device=map_location)
    except RuntimeError as err:
        raise ValueError(
            f"{path} does not hold the weights of the architecture in {CONFIG_NAME}: {err}"
        ) from err


@functools.cache
def hub_io() -> type[Any]:
    """The ``PyTorchModelHubMixin`` class that saves and loads a wrapped scalemix model.

    Built on first use, so that huggingface_hub is imported only then. The mixin saves
    ``self.module``'s state dict (its ``_save_pretrained`` unwraps ``.module``) and the
    config it is given; :meth:`_from_pretrained` builds the model from ``config.json``.
    """
    require_hub()
    from huggingface_hub import PyTorchModelHubMixin

    class HubModel(
        PyTorchModelHubMixin,
        library_name="scalemix",
        tags=["scalemix", "diffusion"],
        docs_url="https://scalemix.readthedocs.io",
    ):
        def __init__(self, module: nn.Module) -> None:
            self.module = module

        @classmethod
        def _from_pretrained(  # type: ignore[override]
            cls,
            *,
            model_id: str,
            revision: str | None,
            cache_dir: str | Path | None,
            force_download: bool,
            local_files_only: bool,
            token: str | bool | None,
            config: dict[str, Any] | None = None,
            target: FromConfig | None = None,
            map_location: str = "cpu",
        ) -> HubModel:
            if target is None:  # pragma: no cover - always passed by from_pretrained
                raise ValueError("target must name the model class")
            if config is None:
                raise FileNotFoundError(
                    f"{model_id!r} holds no {CONFIG_NAME}: it is not a folder written by "
                    f"{target.__name__}.save_pretrained"
                )
            try:
                model = target.from_config(config)
            except (TypeError, ValueError) as err:
                raise type(err)(f"{model_id}/{CONFIG_NAME}: {err}") from err
            hub = {
                "revision": revision,
                "cache_dir": cache_dir,
                "force_download": force_download,
                "local_files_only": local_files_only,
                "token": token,
            }
            weights = resolve_file(model_id, WEIGHTS_NAME, **hub)
            if weights is None:
                raise FileNotFoundError(f"{model_id!r} holds no {WEIGHTS_NAME}")
            _load_weights(cast(nn.Module, model), weights, map_location)
            cast(nn.Module, model).eval()
            return cls(cast(nn.Module, model))

    return HubModel

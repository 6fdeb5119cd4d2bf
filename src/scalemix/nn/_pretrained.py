r"""``save_pretrained`` / ``from_pretrained`` in huggingface_hub's ``PyTorchModelHubMixin`` format.

A saved model is a folder (or a Hub repository) holding

* ``config.json``: the constructor arguments, ``{"_class_name": ..., "hidden_dim": ...}``
  (nested modules, such as a gate, as objects with their own ``_class_name``);
* ``model.safetensors``: the state dict, in the dtype the model had;
* ``README.md``: the model card that the mixin writes;
* optionally ``scheduler_config.json`` (a :class:`~scalemix.DDPMScheduler`, as a diffusers
  ``DDPMScheduler`` config) and ``degradation_config.json`` (a
  :class:`~scalemix.degradation.ScaleSpaceDegradation`'s constructor arguments), so that
  one folder is enough to sample.

Saving and loading go through :class:`huggingface_hub.PyTorchModelHubMixin` (its
``save_pretrained`` writes the files, its ``from_pretrained`` tells a local folder from a
repository id and downloads, caches or reads offline). The mixin is not a base class of
the scalemix models, so that ``import scalemix`` does not need huggingface_hub: the
methods of :class:`PretrainedMixin` import it when called, and a missing extra raises
an ``ImportError`` naming ``pip install 'scalemix[hub]'``.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, cast

from torch import nn
from typing_extensions import Self

if TYPE_CHECKING:
    from ..degradation import BlurDegradation, ScaleSpaceDegradation
    from ..scheduler import DDPMScheduler

__all__ = [
    "CONFIG_NAME",
    "DEGRADATION_CONFIG_NAME",
    "SCHEDULER_CONFIG_NAME",
    "WEIGHTS_NAME",
    "PretrainedMixin",
]

#: the model's constructor arguments (the mixin's file name)
CONFIG_NAME = "config.json"
#: the model's state dict (the mixin's file name)
WEIGHTS_NAME = "model.safetensors"
#: the diffusion process, as a diffusers scheduler config (diffusers' file name)
SCHEDULER_CONFIG_NAME = "scheduler_config.json"
#: the constructor arguments of a :class:`~scalemix.degradation.ScaleSpaceDegradation`
DEGRADATION_CONFIG_NAME = "degradation_config.json"

_META = ("_class_name", "_scalemix_version")

Decoder = Callable[[str, Any], Any]


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


# ------------------------------------------------------------------ JSON decoding
def as_int(name: str, value: Any) -> int:
    """``value`` if it is a JSON integer, else a ``TypeError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"config argument {name!r} must be an integer, got {value!r}")
    return value


def as_float(name: str, value: Any) -> float:
    """``value`` as a float if it is a JSON number, else a ``TypeError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"config argument {name!r} must be a number, got {value!r}")
    return float(value)


def as_bool(name: str, value: Any) -> bool:
    """``value`` if it is a JSON boolean, else a ``TypeError`` naming ``name``."""
    if not isinstance(value, bool):
        raise TypeError(f"config argument {name!r} must be true or false, got {value!r}")
    return value


def as_str(name: str, value: Any) -> str:
    """``value`` if it is a JSON string, else a ``TypeError`` naming ``name``."""
    if not isinstance(value, str):
        raise TypeError(f"config argument {name!r} must be a string, got {value!r}")
    return value


def as_int_tuple(name: str, value: Any) -> tuple[int, ...]:
    """A JSON list of integers as a tuple, else a ``TypeError`` naming ``name``."""
    if not isinstance(value, list):
        raise TypeError(f"config argument {name!r} must be a list of integers, got {value!r}")
    return tuple(as_int(f"{name}[{i}]", v) for i, v in enumerate(value))


def as_int_map(name: str, value: Any) -> dict[int, int]:
    """A JSON object ``{"40": 0}`` (keys: decimal integers) as ``{40: 0}``."""
    if not isinstance(value, dict):
        raise TypeError(f"config argument {name!r} must be an object, got {value!r}")
    out: dict[int, int] = {}
    for key, item in value.items():
        if not (isinstance(key, str) and key.lstrip("-").isdecimal()):
            raise TypeError(f"config argument {name!r} has a key {key!r} that is no integer")
        out[int(key)] = as_int(f"{name}[{key}]", item)
    return out


def optional(decode: Decoder) -> Decoder:
    """A decoder that accepts JSON ``null`` (``None``) besides what ``decode`` accepts."""

    def inner(name: str, value: Any) -> Any:
        return None if value is None else decode(name, value)

    return inner


def decode_arguments(
    owner: str, config: Mapping[str, Any], fields: Mapping[str, Decoder], prefix: str = ""
) -> dict[str, Any]:
    """Check a config object of ``owner`` against its ``fields`` and decode it.

    ``_class_name`` must be ``owner``; other keys must be fields (keys left out take
    the constructor's defaults). Messages name an argument as ``prefix + key``.

    Raises:
        ValueError: a missing or different ``_class_name`` (naming both classes), or an
            unknown argument (naming it and the accepted ones).
        TypeError: a value of the wrong JSON type (naming the argument).
    """
    if not isinstance(config, Mapping):
        raise TypeError(f"a {owner} config must be a JSON object, got {type(config).__name__}")
    saved = config.get("_class_name")
    if saved is None:
        raise ValueError(
            f"the config has no '_class_name', so it was not written by scalemix's "
            f"save_pretrained; expected _class_name={owner!r}"
        )
    if saved != owner:
        raise ValueError(
            f"the config describes a {saved} (_class_name={saved!r}), not a {owner}; load "
            f"it with {saved}.from_pretrained(...) instead of {owner}.from_pretrained(...)"
        )
    out: dict[str, Any] = {}
    for key, value in config.items():
        if key in _META:
            continue
        if key not in fields:
            raise ValueError(
                f"config argument {prefix + key!r} is not an argument of {owner}; accepted: "
                f"{', '.join(sorted(fields))}"
            )
        out[key] = fields[key](prefix + key, value)
    return out


def module_config(module: nn.Module, name: str) -> dict[str, Any]:
    """The config object of a nested module (a gate or an upscale) of a saved model."""
    from .gate import TimestepGate
    from .rescale import LearnedAffineUpscale, ScaleUpscale

    if isinstance(module, TimestepGate):
        network = module.network
        hidden = cast(nn.Linear, network[0]).out_features if network is not None else 256
        slope = 0.2
        if network is not None and module.mode == "deep":
            slope = float(cast(nn.LeakyReLU, network[1]).negative_slope)
        return {
            "_class_name": "TimestepGate",
            "mode": module.mode,
            "num_branches": module.num_branches,
            "embedding_dim": module.embedding_dim,
            "hidden_dim": hidden,
            "time_scale": module.time_embedding.scale,
            "negative_slope": slope,
        }
    if type(module) is LearnedAffineUpscale:
        return {"_class_name": "LearnedAffineUpscale", "dim": module.dim}
    if type(module) is ScaleUpscale:
        return {"_class_name": "ScaleUpscale", "factor": module.factor}
    raise TypeError(
        f"save_pretrained cannot describe {name}={type(module).__name__} in config.json; "
        "accepted: TimestepGate, LearnedAffineUpscale, ScaleUpscale"
    )


_MODULE_FIELDS: dict[str, dict[str, Decoder]] = {
    "TimestepGate": {
        "mode": as_str,
        "num_branches": as_int,
        "embedding_dim": as_int,
        "hidden_dim": as_int,
        "time_scale": as_float,
        "negative_slope": as_float,
    },
    "LearnedAffineUpscale": {"dim": as_int},
    "ScaleUpscale": {"factor": as_float},
}


def build_module(name: str, value: Any) -> nn.Module:
    """The nested module that :func:`module_config` describes, freshly initialised."""
    from .gate import TimestepGate
    from .rescale import LearnedAffineUpscale, ScaleUpscale

    if not isinstance(value, dict):
        raise TypeError(f"config argument {name!r} must be an object, got {value!r}")
    kind = value.get("_class_name")
    if kind not in _MODULE_FIELDS:
        raise ValueError(
            f"config argument {name!r} has _class_name={kind!r}; accepted: "
            f"{', '.join(_MODULE_FIELDS)}"
        )
    kwargs = decode_arguments(kind, value, _MODULE_FIELDS[kind], prefix=f"{name}.")
    if kind == "TimestepGate":
        return TimestepGate(**kwargs)
    if kind == "LearnedAffineUpscale":
        return LearnedAffineUpscale(**kwargs)
    return ScaleUpscale(**kwargs)


# ------------------------------------------------------------------ files
def _is_local(path_or_id: str | os.PathLike[str]) -> bool:
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
    if _is_local(path_or_id):
        path = os.path.join(os.fspath(path_or_id), filename)
        return path if os.path.isfile(path) else None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        cached: str = hf_hub_download(repo_id=os.fspath(path_or_id), filename=filename, **hub)
    except EntryNotFoundError:
        return None
    return cached


def read_json(path: str) -> dict[str, Any]:
    """A JSON object from ``path`` (``ValueError`` naming the file if it is not one)."""
    with open(path, encoding="utf-8") as f:
        try:
            value = json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON: {err}") from err
    if not isinstance(value, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(value).__name__}")
    return value


def write_json(path: Path, value: Mapping[str, Any]) -> None:
    """Write ``value`` as the mixin writes ``config.json`` (sorted keys, indent 2)."""
    path.write_text(json.dumps(value, sort_keys=True, indent=2), encoding="utf-8")


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
def _hub_io() -> type[Any]:
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
            target: type[PretrainedMixin] | None = None,
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


# ------------------------------------------------------------------ the mixin
class PretrainedMixin:
    """``save_pretrained`` / ``from_pretrained`` of the scalemix models, in the mixin's format.

    A base of :class:`~scalemix.nn.MLPDenoiser`, :class:`~scalemix.nn.DualScaleDenoiser`
    and :class:`~scalemix.nn.FlexiUNet`; the files are those of the module docstring.
    A subclass lists its constructor arguments in ``_config_fields`` (name -> JSON
    decoder) and returns their values in ``_constructor_config()``.
    """

    _config_fields: ClassVar[Mapping[str, Decoder]]

    def _constructor_config(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def _from_arguments(cls, arguments: dict[str, Any]) -> Self:
        """Build the model from decoded constructor arguments."""
        return cls(**arguments)

    def pretrained_config(self) -> dict[str, Any]:
        """The JSON object :meth:`save_pretrained` writes to ``config.json``.

        ``{"_class_name": <class>, "_scalemix_version": ..., <constructor argument>:
        <value>, ...}``; nested modules are objects with their own ``_class_name``.
        :meth:`from_config` builds the same architecture from it.

        Raises:
            TypeError: a nested module that has no JSON description (e.g. a custom
                ``upscale``), naming the argument.
        """
        from .. import __version__

        return {
            "_class_name": type(self).__name__,
            "_scalemix_version": __version__,
            **self._constructor_config(),
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Self:
        """A freshly initialised model with the architecture of a :meth:`pretrained_config`.

        Raises:
            ValueError: a config of another class (both named), an unknown argument
                (named, with the accepted ones), or values the constructor rejects.
            TypeError: an argument of the wrong JSON type (named).
        """
        return cls._from_arguments(decode_arguments(cls.__name__, config, cls._config_fields))

    def save_pretrained(
        self,
        save_directory: str | os.PathLike[str],
        *,
        scheduler: DDPMScheduler | None = None,
        degradation: ScaleSpaceDegradation | BlurDegradation | None = None,
    ) -> Path:
        """Write the model to ``save_directory`` (created if needed) in the mixin's format.

        Writes ``config.json`` (:meth:`pretrained_config`), ``model.safetensors`` (the
        state dict, in the model's dtype) and the model card ``README.md`` (kept if the
        folder has one) through :meth:`huggingface_hub.PyTorchModelHubMixin.save_pretrained`;
        with ``scheduler``, ``scheduler_config.json``
        (:func:`scalemix.hub.scheduler_config`); with ``degradation``,
        ``degradation_config.json`` (:func:`scalemix.hub.degradation_config`). A
        scheduler or degradation file left from an earlier save is removed when that
        argument is not given. Upload the folder with
        :func:`huggingface_hub.upload_folder`.

        Args:
            save_directory: the folder to write.
            scheduler: the diffusion process the model was trained with, if any.
            degradation: the scale-space or blur degradation it was trained with, if any.

        Returns:
            ``save_directory`` as a :class:`~pathlib.Path`.

        Raises:
            ImportError: without the extra ``scalemix[hub]``.
            TypeError: a module or object that has no JSON description.
            ValueError: a scheduler or degradation that its constructor cannot rebuild.
        """
        from ..hub import degradation_config, scheduler_config

        require_hub()
        config = self.pretrained_config()  # every check before the first file is written
        sidecars = {
            SCHEDULER_CONFIG_NAME: None if scheduler is None else scheduler_config(scheduler),
            DEGRADATION_CONFIG_NAME: (
                None if degradation is None else degradation_config(degradation)
            ),
        }
        folder = Path(save_directory)
        _hub_io()(self).save_pretrained(folder, config=config)
        for name, value in sidecars.items():
            if value is None:
                (folder / name).unlink(missing_ok=True)
            else:
                write_json(folder / name, value)
        return folder

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike[str],
        *,
        map_location: str = "cpu",
        revision: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        force_download: bool = False,
        local_files_only: bool = False,
        token: str | bool | None = None,
    ) -> Self:
        """Load a model written by :meth:`save_pretrained`, from a folder or a Hub repository.

        Resolution is :meth:`huggingface_hub.PyTorchModelHubMixin.from_pretrained`'s: an
        existing folder is read directly (works offline, e.g. with ``HF_HUB_OFFLINE=1``);
        anything else is a repository id, downloaded into (or read from) the Hub cache.
        The weights are loaded strictly (every tensor must fit) and in the dtype they
        were saved in; the model is returned in eval mode, as the mixin does.

        Args:
            pretrained_model_name_or_path: a folder, or a repository id ``"user/name"``.
            map_location: the device to load the weights on.
            revision: branch, tag or commit of the repository.
            cache_dir: the Hub cache folder.
            force_download: download again even if cached.
            local_files_only: use the Hub cache only.
            token: Hub access token.

        Returns:
            The model, in eval mode.

        Raises:
            ImportError: without the extra ``scalemix[hub]``.
            FileNotFoundError: a path that is no folder, or a folder without the files.
            ValueError: a folder saved by another class (both named), an unknown or
                invalid argument in ``config.json`` (named), or weights that do not fit.
            TypeError: an argument of the wrong JSON type (named).
        """
        require_hub()
        _is_local(pretrained_model_name_or_path)  # a path that is no folder: a clear error
        hub_model = _hub_io().from_pretrained(
            os.fspath(pretrained_model_name_or_path),
            revision=revision,
            cache_dir=cache_dir,
            force_download=force_download,
            local_files_only=local_files_only,
            token=token,
            target=cls,
            map_location=str(map_location),
        )
        return cast(Self, hub_model.module)

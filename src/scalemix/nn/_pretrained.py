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

Any network of your own saves the same way: subclass :class:`PretrainedMixin` and
``torch.nn.Module``, annotate ``config: YourConfig`` with a frozen dataclass of JSON
values, take that config as the constructor's one argument and keep it as
``self.config`` (the page "Your own network").
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, cast

from typing_extensions import Self

from .._version import __version__
from ..degradation import BlurDegradation, ScaleSpaceDegradation
from ..scheduler import DDPMScheduler
from ._config_json import FIELD_TYPES, Decoder, decode_arguments, field_decoder, write_json
from ._hub_files import (
    DEGRADATION_CONFIG_NAME,
    SCHEDULER_CONFIG_NAME,
    hub_io,
    is_local,
    require_hub,
)
from ._sidecars import degradation_config, scheduler_config

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = ["OWN_NETWORK_DOCS", "PretrainedMixin", "unsupported_model"]

#: where the docs explain how to make a network of one's own savable
OWN_NETWORK_DOCS = (
    "see the docs page 'Your own network', section 'Saving and loading your own network'"
)


def unsupported_model(model: object, what: str) -> TypeError:
    """The ``TypeError`` for a model (or model class) that cannot be saved: what is
    wrong, how to declare a config, and where the docs explain it."""
    name = model.__name__ if isinstance(model, type) else type(model).__name__
    return TypeError(
        f"{name} cannot be saved with save_pretrained: {what}. Subclass "
        "scalemix.nn.PretrainedMixin, annotate 'config: YourConfig' with a frozen "
        "dataclass of JSON values (int, float, bool, str, tuples of them, or None), take "
        f"it as the constructor's one argument and keep it as self.config; {OWN_NETWORK_DOCS}"
    )


def _json_value(value: object) -> object:
    """A dataclass field value as JSON (tuples as lists)."""
    return [_json_value(v) for v in value] if isinstance(value, tuple) else value


class PretrainedMixin:
    """``save_pretrained`` / ``from_pretrained`` in huggingface_hub's mixin format.

    A base of :class:`~scalemix.nn.MLPDenoiser`, :class:`~scalemix.nn.DualScaleDenoiser`
    and :class:`~scalemix.nn.FlexiUNet`, and of any network of your own: declare its
    configuration as a frozen :func:`dataclasses.dataclass` whose fields are ``int``,
    ``float``, ``bool``, ``str``, ``tuple[X, ...]`` of these, or ``X | None``;
    annotate the class ``config: YourConfig``; build the network from the config
    alone (``YourNet(config)``) and keep it as ``self.config``:

    .. code-block:: python

        @dataclass(frozen=True)
        class TinyConfig:
            channels: int = 1
            width: int = 16

        class TinyNet(PretrainedMixin, nn.Module):
            config: TinyConfig

            def __init__(self, config: TinyConfig) -> None:
                super().__init__()
                self.config = config
                ...

    ``config.json`` then holds the dataclass fields (tuples as lists) and
    :meth:`from_pretrained` rebuilds ``TinyNet(TinyConfig(**fields))`` and loads the
    weights. The files are those of the module docstring; the page "Your own network"
    has a complete example.
    """

    #: the built-in models' decoders of their constructor arguments (internal; a
    #: network of your own declares a dataclass ``config`` instead)
    _config_fields: ClassVar[Mapping[str, Decoder] | None] = None

    @classmethod
    def _config_class(cls) -> type[DataclassInstance] | None:
        """The frozen dataclass annotated as ``config`` on the class, or ``None``.

        Raises:
            TypeError: ``config`` is annotated with something that is not a frozen
                dataclass (or an annotation that does not resolve).
        """
        for klass in cls.__mro__:
            if "config" not in vars(klass).get("__annotations__", {}):
                continue
            try:
                hint = inspect.get_annotations(klass, eval_str=True)["config"]
            except Exception as err:
                raise unsupported_model(
                    cls, f"its annotation 'config' does not resolve ({err})"
                ) from err
            params = getattr(hint, "__dataclass_params__", None)
            if not (isinstance(hint, type) and params is not None and params.frozen):
                raise unsupported_model(
                    cls, f"its 'config' is annotated {hint!r}, which is no frozen dataclass"
                )
            return cast("type[DataclassInstance]", hint)
        return None

    @classmethod
    def _decoders(cls) -> Mapping[str, Decoder]:
        """The JSON decoder of each constructor argument (or each config field)."""
        if cls._config_fields is not None:
            return cls._config_fields
        config_cls = cls._config_class()
        if config_cls is None:
            raise unsupported_model(cls, "it declares no config")
        hints = typing.get_type_hints(config_cls)
        decoders: dict[str, Decoder] = {}
        for field in dataclasses.fields(config_cls):
            decoder = field_decoder(hints[field.name])
            if decoder is None:
                raise unsupported_model(
                    cls,
                    f"config field {field.name!r} has the type {hints[field.name]!r}; "
                    f"accepted: {FIELD_TYPES}",
                )
            decoders[field.name] = decoder
        return decoders

    def _constructor_config(self) -> dict[str, Any]:
        """The constructor arguments as JSON values (the fields of ``self.config``)."""
        decoders = type(self)._decoders()
        config = getattr(self, "config", None)
        config_cls = type(self)._config_class()
        if config_cls is None or not isinstance(config, config_cls):
            raise unsupported_model(
                self,
                f"self.config is a {type(config).__name__}, not the declared config class",
            )
        return {name: _json_value(getattr(config, name)) for name in decoders}

    @classmethod
    def _from_arguments(cls, arguments: dict[str, Any]) -> Self:
        """Build the model from decoded constructor arguments (or config fields)."""
        config_cls = None if cls._config_fields is not None else cls._config_class()
        if config_cls is None:
            return cls(**arguments)
        return cls(config_cls(**arguments))  # type: ignore[call-arg]

    def pretrained_config(self) -> dict[str, Any]:
        """The JSON object :meth:`save_pretrained` writes to ``config.json``.

        ``{"_class_name": <class>, "_scalemix_version": ..., <constructor argument>:
        <value>, ...}``; nested modules are objects with their own ``_class_name``.
        :meth:`from_config` builds the same architecture from it.

        Raises:
            TypeError: a nested module that has no JSON description (e.g. a custom
                ``upscale``), naming the argument, or a class with no declared config.
        """
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
        return cls._from_arguments(decode_arguments(cls.__name__, config, cls._decoders()))

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
        require_hub()
        config = self.pretrained_config()  # every check before the first file is written
        sidecars = {
            SCHEDULER_CONFIG_NAME: None if scheduler is None else scheduler_config(scheduler),
            DEGRADATION_CONFIG_NAME: (
                None if degradation is None else degradation_config(degradation)
            ),
        }
        folder = Path(save_directory)
        hub_io()(self).save_pretrained(folder, config=config)
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
        is_local(pretrained_model_name_or_path)  # a path that is no folder: a clear error
        hub_model = hub_io().from_pretrained(
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

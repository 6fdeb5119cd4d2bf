"""The JSON side of a saved model's config: typed decoders, and reading and writing files.

A config file is a JSON object; each constructor argument has a decoder ``(name,
value) -> value`` that checks the JSON type and raises a ``TypeError`` naming the
argument. :func:`decode_arguments` checks a whole object against a class's decoders;
:func:`field_decoder` derives the decoder of a dataclass field from its annotation.
Nothing here imports anything of scalemix.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "Decoder",
    "as_bool",
    "as_float",
    "as_int",
    "as_int_map",
    "as_int_tuple",
    "as_str",
    "decode_arguments",
    "field_decoder",
    "optional",
    "read_json",
    "write_json",
]

#: keys of a config object that are no constructor arguments
META_KEYS = ("_class_name", "_scalemix_version")

#: ``(argument name, JSON value) -> decoded value``
Decoder = Callable[[str, Any], Any]


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
        if key in META_KEYS:
            continue
        if key not in fields:
            raise ValueError(
                f"config argument {prefix + key!r} is not an argument of {owner}; accepted: "
                f"{', '.join(sorted(fields))}"
            )
        out[key] = fields[key](prefix + key, value)
    return out


def as_tuple(decode: Decoder) -> Decoder:
    """A decoder of a JSON list whose items ``decode`` accepts, as a tuple."""

    def inner(name: str, value: Any) -> tuple[Any, ...]:
        if not isinstance(value, list):
            raise TypeError(f"config argument {name!r} must be a list, got {value!r}")
        return tuple(decode(f"{name}[{i}]", v) for i, v in enumerate(value))

    return inner


_SCALARS: dict[object, Decoder] = {int: as_int, float: as_float, bool: as_bool, str: as_str}
#: the field types :func:`field_decoder` accepts, as the error messages name them
FIELD_TYPES = "int, float, bool, str, tuple[<one of these>, ...], or one of them | None"


def field_decoder(annotation: object) -> Decoder | None:
    """The decoder of a dataclass field annotated ``annotation``, or ``None`` if none fits.

    Accepted: ``int``, ``float``, ``bool``, ``str``, ``tuple[X, ...]`` of one of these,
    and ``X | None`` (``Optional[X]``) of any of the above.
    """
    if annotation in _SCALARS:
        return _SCALARS[annotation]
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis and args[0] in _SCALARS:
        return as_tuple(_SCALARS[args[0]])
    if origin in (typing.Union, types.UnionType) and len(args) == 2 and type(None) in args:
        inner = field_decoder(args[0] if args[1] is type(None) else args[1])
        return None if inner is None else optional(inner)
    return None


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

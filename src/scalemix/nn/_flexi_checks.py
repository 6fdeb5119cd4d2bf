"""Constructor checks and error messages of :class:`~scalemix.nn.flexi_unet.FlexiUNet`."""

from __future__ import annotations

from collections.abc import Mapping


def _validate_config(
    in_channels: int,
    base_channels: int,
    mults: tuple[int, ...],
    num_res_blocks: int,
    image_size: int,
    dropout: float,
) -> None:
    """Raise a ``ValueError`` naming the first invalid constructor argument."""
    if in_channels < 1 or base_channels < 1:
        raise ValueError(
            f"in_channels and base_channels must be positive, got {in_channels} and {base_channels}"
        )
    if base_channels < 4 or base_channels % 2:
        raise ValueError(
            f"base_channels must be an even integer >= 4 (the width of the sinusoidal "
            f"timestep features), got {base_channels}"
        )
    if not mults or min(mults) < 1:
        raise ValueError(f"channel_mult must be a non-empty sequence of positive ints, got {mults}")
    if num_res_blocks < 1:
        raise ValueError(f"num_res_blocks must be at least 1, got {num_res_blocks}")
    if image_size < 1:
        raise ValueError(f"image_size must be a positive int, got {image_size}")
    if image_size % 2 ** (len(mults) - 1) != 0:
        max_levels = (image_size & -image_size).bit_length()  # 1 + the power of 2 in it
        raise ValueError(
            f"{len(mults)} levels need image_size to be a multiple of {2 ** (len(mults) - 1)}; "
            f"a {image_size}px image allows at most {max_levels} levels "
            f"(len(channel_mult) <= {max_levels})"
        )
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must lie in [0, 1), got {dropout}")


def _validate_entry_levels(
    entry_levels: Mapping[int, int] | None, levels: int, image_size: int
) -> dict[int, int]:
    """``entry_levels`` as a dict, each size a multiple of ``2^(L-1-level)`` in range."""
    out = dict(entry_levels or {})
    for size, lvl in out.items():
        d = 2 ** (levels - 1 - lvl) if 0 <= lvl < levels else 0
        if not 1 <= size <= image_size or d == 0 or size % d != 0:
            raise ValueError(
                f"entry_levels maps {size} to level {lvl}; a level must lie in "
                f"[0, {levels}) and a size in [1, {image_size}] divisible by 2**(L-1-level)"
            )
    return out


def _resolution_error(resolution: int, resolutions: tuple[int, ...], err: Exception) -> ValueError:
    """The error for an input size that no level accepts, listing the accepted ones."""
    levels = len(resolutions)
    rules = ", ".join(
        f"multiples of {2 ** (levels - 1 - i)} in "
        f"({resolutions[i + 1] if i + 1 < levels else 0}, {r}]"
        for i, r in enumerate(resolutions)
    )
    return ValueError(
        f"resolution {resolution} cannot run on this FlexiUNet ({err}); accepted "
        f"resolutions are {list(resolutions)} and, in general, {rules}"
    )


def _out_size_error(resolution: int, out_size: int | None, image_size: int) -> ValueError:
    """The error for an ``out_size`` that a ``resolution`` input cannot be mapped to."""
    return ValueError(
        f"out_size {out_size} is not allowed for a {resolution}x{resolution} input; "
        f"accepted values are None, {resolution}, or a larger size up to "
        f"image_size={image_size} that this FlexiUNet accepts as input (e.g. "
        f"{min(2 * resolution, image_size)}): preserve, or increase to the next "
        "pyramid size"
    )

"""Flexi-UNet: one UNet that denoises at every level of a resolution pyramid.

Scale Space Diffusion (Mukhopadhyay, Udhayanan & Shrivastava, CVPR 2026,
arXiv 2603.08709, section "Flexi-UNet") lowers the resolution of ``x_t`` as
noise grows, so most reverse steps run on small images. The Flexi-UNet lets a
single network serve all of them while the compute of a call scales with the
resolution it sees: a call at resolution ``r`` enters the encoder at the level
whose native resolution is ``r`` (or, for pyramids that do not halve, the level
the reference code's band rule maps ``r`` to, see
:func:`scalemix.degradation.unet_level`), and leaves the decoder either at that
level (resolution-preserving step) or at the level of the next pyramid size
(resolution-increasing step, output ``2r`` for a halving pyramid).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from scalemix._validation import (
    check_input_dtype,
    check_num_classes,
    class_labels_of,
    model_timesteps,
)
from scalemix.degradation.pyramid import unet_level
from scalemix.nn._conditioning import class_embedding, make_class_embedding
from scalemix.nn._config_json import (
    Decoder,
    as_bool,
    as_float,
    as_int,
    as_int_map,
    as_int_tuple,
    optional,
)
from scalemix.nn._flexi_checks import (
    _out_size_error,
    _resolution_error,
    _validate_config,
    _validate_entry_levels,
)
from scalemix.nn._pretrained import PretrainedMixin
from scalemix.nn.unet_blocks import (
    AttentionBlock,
    Downsample,
    ResBlock,
    TimeEmbedding,
    TimestepEmbedSequential,
    Upsample,
    group_norm,
    width_adapter,
    zero_module,
)

__all__ = ["FlexiUNet"]


class FlexiUNet(PretrainedMixin, nn.Module):
    r"""UNet whose levels match a resolution pyramid; runs only the levels a call needs.

    Level ``i`` (``0 <= i < L``, ``L = len(channel_mult)``) has native resolution
    ``R_i = image_size / 2^i`` and width ``w_i = base_channels * channel_mult[i]``;
    every feature map at level ``i`` has ``w_i`` channels (the downsample from
    level ``i`` and the upsample into it change the width). An input at resolution
    ``r`` enters at level ``k``: the level with :math:`R_k \ge r > R_{k+1}` (so
    ``r = R_k`` for a halving pyramid; 64/40/28/20 run at 64/64/32/32), or
    ``entry_levels[r]`` when given; ``r`` must be a multiple of :math:`2^{L-1-k}`.
    Then:

    1. a shared 3x3 input convolution (``in_channels -> base_channels``, any
       resolution) and the 1x1 input adapter of level ``k`` (``-> w_k``);
    2. the encoder from level ``k`` down (levels ``< k`` are skipped; each
       downsample halves exactly), then the middle block (residual, attention,
       residual) at level ``L - 1``;
    3. the decoder back up to the exit level ``e`` of ``out_size`` (same rule):
       ``e = k`` when ``out_size = r``; for ``out_size = o > r`` it runs on through
       the levels above ``k`` (whose skip connections are zeros since those encoder
       levels were skipped) and the upsample into level ``i < k`` produces
       :math:`o / 2^{i-e}` pixels (nearest x2 when that doubles, bilinear otherwise,
       e.g. 28 -> 40); when ``e = k`` (e.g. 20 -> 28, both at level 1) no upsample
       lies on the path and the decoder's output is resized bilinearly to ``o``;
    4. the 1x1 output adapter of level ``e`` (``w_e -> base_channels``) and a
       shared head ``GN -> SiLU -> conv3x3`` whose convolution is zero-initialised.

    A full-resolution call with ``out_size=None`` is a standard UNet (the DDPM
    baseline); with ``channel_mult[0] == 1`` the level-0 adapters are identities.

    **Class conditioning.** ``num_classes=K`` adds ``class_embed``, an ``nn.Embedding(K + 1, D)``
    of the embedding width ``D``; the blocks read ``emb = time_embed(t) + class_embed(y)``;
    label ``K`` is the learned null class (classifier-free guidance's unconditional half).

    **Distributed training.** A call leaves unused the adapters of the other
    levels, and below full resolution the encoder and decoder levels above the
    input. Training on several levels under
    :class:`torch.nn.parallel.DistributedDataParallel` therefore needs
    ``find_unused_parameters=True``; :meth:`unused_parameters` lists the
    parameter names a given call leaves without gradient. (In a single process
    nothing is needed: those parameters keep ``grad=None`` and optimisers skip them.)

    **Saving.** ``save_pretrained(folder)`` / ``FlexiUNet.from_pretrained(folder_or_repo_id)``
    store the constructor arguments in ``config.json`` and the weights in
    ``model.safetensors`` (:class:`~scalemix.nn.PretrainedMixin`; extra ``scalemix[hub]``).

    Args:
        in_channels: channels ``c`` of the input image.
        base_channels: width of the input convolution and of the head.
        channel_mult: width multiplier of each level, finest first.
        num_res_blocks: residual blocks per encoder level (the decoder has one more).
        attention_resolutions: resolutions (in pixels) whose levels use attention.
        image_size: full resolution ``R_0``; a multiple of :math:`2^{L-1}`.
        dropout: dropout probability inside residual blocks.
        num_heads: attention heads (ignored when ``num_head_channels`` is given).
        num_head_channels: channels per attention head, if given.
        out_channels: output channels (default ``in_channels``).
        scale_shift: condition residual blocks by scale and shift (else additive).
        entry_levels: optional ``{size: level}`` overriding the band rule for some
            sizes (e.g. :attr:`ScaleSpaceDegradation.pyramid
            <scalemix.degradation.ScaleSpaceDegradation>` when the reference's rounding
            moved a size across a band boundary).
        num_classes: ``K`` classes for a class-conditional network (labels ``0..K-1``,
            and ``K`` the null class); ``None``: unconditional, without ``class_embed``.

    Raises:
        ValueError: for an ``image_size`` that is no multiple of :math:`2^{L-1}`
            (too many levels), an attention resolution that is no level's
            native resolution, widths not divisible into heads, non-positive sizes,
            or a ``base_channels`` that is odd or below 4 (the width of the
            sinusoidal timestep features), or a ``num_classes`` below 1.
    """

    #: predicts at any pyramid size ``out_size``, not only at its input's
    changes_resolution: ClassVar[bool] = True

    _config_fields: ClassVar[Mapping[str, Decoder]] = {
        "in_channels": as_int,
        "base_channels": as_int,
        "channel_mult": as_int_tuple,
        "num_res_blocks": as_int,
        "attention_resolutions": as_int_tuple,
        "image_size": as_int,
        "dropout": as_float,
        "num_heads": as_int,
        "num_head_channels": optional(as_int),
        "out_channels": optional(as_int),
        "scale_shift": as_bool,
        "entry_levels": optional(as_int_map),
        "num_classes": optional(as_int),
    }

    def __init__(
        self,
        in_channels: int = 3,
        base_channels: int = 128,
        channel_mult: Sequence[int] = (1, 2, 3, 4),
        num_res_blocks: int = 2,
        attention_resolutions: Sequence[int] = (16, 8),
        image_size: int = 64,
        dropout: float = 0.0,
        num_heads: int = 4,
        num_head_channels: int | None = None,
        out_channels: int | None = None,
        scale_shift: bool = True,
        entry_levels: Mapping[int, int] | None = None,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        mults = tuple(int(m) for m in channel_mult)
        _validate_config(in_channels, base_channels, mults, num_res_blocks, image_size, dropout)
        levels = len(mults)
        self.num_classes = check_num_classes(num_classes)
        self.in_channels = in_channels
        self.out_channels = in_channels if out_channels is None else out_channels
        if self.out_channels < 1:
            raise ValueError(f"out_channels must be positive, got {self.out_channels}")
        self.image_size = image_size
        self.resolutions: tuple[int, ...] = tuple(image_size >> i for i in range(levels))
        self.widths: tuple[int, ...] = tuple(base_channels * m for m in mults)
        self.entry_levels: dict[int, int] = _validate_entry_levels(entry_levels, levels, image_size)
        attention = [int(r) for r in attention_resolutions]
        attn = set(attention)
        if not attn <= set(self.resolutions):
            raise ValueError(
                f"attention_resolutions {sorted(attn)} must be native resolutions of the "
                f"levels; accepted values are {list(self.resolutions)}"
            )

        def heads(width: int) -> int:
            if num_head_channels is None:
                return num_heads
            if num_head_channels < 1 or width % num_head_channels != 0:
                raise ValueError(
                    f"num_head_channels={num_head_channels} must divide every attention width, "
                    f"which includes {width}"
                )
            return width // num_head_channels

        def stage(width_in: int, width: int, resolution: int) -> TimestepEmbedSequential:
            layers: list[nn.Module] = [ResBlock(width_in, width, emb_dim, dropout, scale_shift)]
            if resolution in attn:
                layers.append(AttentionBlock(width, heads(width)))
            return TimestepEmbedSequential(*layers)

        # the constructor arguments, for save_pretrained (JSON values)
        self._arguments: dict[str, Any] = {
            "in_channels": in_channels,
            "base_channels": base_channels,
            "channel_mult": list(mults),
            "num_res_blocks": num_res_blocks,
            "attention_resolutions": attention,
            "image_size": image_size,
            "dropout": float(dropout),
            "num_heads": num_heads,
            "num_head_channels": num_head_channels,
            "out_channels": self.out_channels,
            "scale_shift": scale_shift,
            "entry_levels": {str(size): lvl for size, lvl in sorted(self.entry_levels.items())},
            "num_classes": self.num_classes,
        }
        emb_dim = 4 * base_channels
        w, res = self.widths, self.resolutions
        self.time_embed = TimeEmbedding(base_channels, emb_dim)
        self.input_conv = nn.Conv2d(in_channels, base_channels, 3, padding=1)
        self.in_adapters = nn.ModuleList(width_adapter(base_channels, wi) for wi in w)
        self.encoder = nn.ModuleList(
            nn.ModuleList(stage(w[i], w[i], res[i]) for _ in range(num_res_blocks))
            for i in range(levels)
        )
        self.downsamples = nn.ModuleList(Downsample(w[i], w[i + 1]) for i in range(levels - 1))
        self.middle = TimestepEmbedSequential(
            ResBlock(w[-1], w[-1], emb_dim, dropout, scale_shift),
            AttentionBlock(w[-1], heads(w[-1])),
            ResBlock(w[-1], w[-1], emb_dim, dropout, scale_shift),
        )
        self.decoder = nn.ModuleList(
            nn.ModuleList(stage(2 * w[i], w[i], res[i]) for _ in range(num_res_blocks + 1))
            for i in range(levels)
        )
        # upsamples[i] maps level i + 1 to level i.
        self.upsamples = nn.ModuleList(Upsample(w[i + 1], w[i]) for i in range(levels - 1))
        self.out_adapters = nn.ModuleList(width_adapter(wi, base_channels) for wi in w)
        self.head = nn.Sequential(
            group_norm(base_channels),
            nn.SiLU(),
            zero_module(nn.Conv2d(base_channels, self.out_channels, 3, padding=1)),
        )
        # last, so that the other layers draw the initialisation of the unconditional net
        self.class_embed = make_class_embedding(self.num_classes, emb_dim)

    def _constructor_config(self) -> dict[str, Any]:
        return dict(self._arguments)

    @property
    def num_levels(self) -> int:
        """Number of pyramid levels ``L``."""
        return len(self.resolutions)

    def level(self, resolution: int) -> int:
        r"""Index ``i`` of the level a ``resolution x resolution`` input runs at.

        ``entry_levels[resolution]`` if given, else the band rule
        :math:`R_i \ge r > R_{i+1}` (:func:`scalemix.degradation.unet_level`); for a
        native resolution ``image_size / 2^i`` this is ``i``.

        Raises:
            ValueError: if ``resolution`` exceeds ``image_size`` or is no multiple of
                :math:`2^{L-1-i}`.
        """
        if resolution in self.entry_levels:
            return self.entry_levels[resolution]
        try:
            if not 1 <= resolution <= self.image_size:
                raise ValueError(f"resolution {resolution} is outside [1, {self.image_size}]")
            return unet_level(resolution, self.image_size, self.num_levels)
        except ValueError as err:
            raise _resolution_error(resolution, self.resolutions, err) from None

    def _route(self, resolution: int, out_size: int | None) -> tuple[int, int]:
        """Entry and exit levels of a call mapping ``resolution`` to ``out_size``."""
        k = self.level(resolution)
        if out_size is None or out_size == resolution:
            return k, k
        if resolution < out_size <= self.image_size:
            try:
                e = self.level(out_size)
            except ValueError:
                e = -1
            if 0 <= e <= k:
                return k, e
        raise _out_size_error(resolution, out_size, self.image_size)

    def unused_parameters(self, resolution: int, out_size: int | None = None) -> list[str]:
        """Names of the parameters that a call at ``resolution -> out_size`` does not use.

        These get no gradient from such a call (``param.grad`` stays ``None``).

        Args:
            resolution: input resolution ``r``.
            out_size: ``None``, ``r`` or a larger size as in :meth:`forward`.

        Returns:
            Parameter names as in ``named_parameters()``, in that order.

        Raises:
            ValueError: for a resolution or ``out_size`` that :meth:`forward` rejects.
        """
        k, e = self._route(resolution, out_size)
        levels = self.num_levels
        used = {
            "time_embed.",
            "class_embed.",
            "input_conv.",
            "middle.",
            "head.",
            f"in_adapters.{k}.",
            f"out_adapters.{e}.",
        }
        used |= {f"encoder.{i}." for i in range(k, levels)}
        used |= {f"downsamples.{i}." for i in range(k, levels - 1)}
        used |= {f"decoder.{i}." for i in range(e, levels)}
        used |= {f"upsamples.{i}." for i in range(e, levels - 1)}
        return [name for name, _ in self.named_parameters() if not name.startswith(tuple(used))]

    def forward(
        self,
        x: Tensor,
        t: Tensor | int,
        out_size: int | None = None,
        *,
        class_labels: Tensor | None = None,
    ) -> Tensor:
        """Denoise ``x`` at its own resolution, or at the next (larger) pyramid resolution.

        Args:
            x: noisy images of shape ``(b, in_channels, r, r)`` with ``r`` one of
                :attr:`resolutions`, or any size :meth:`level` accepts (e.g. 40 or 28
                on a 64-px, 4-level UNet).
            t: timesteps of shape ``(b,)`` (integer or real), or one timestep for the
                batch (a number or a 0-d tensor).
            out_size: ``None`` or ``r`` (resolution-preserving step) or a larger size
                ``o <= image_size`` that :meth:`level` accepts, at a level no deeper
                than ``r``'s (resolution-increasing step: ``2r`` for a halving
                pyramid, the next pyramid size in general).
            class_labels: int64 labels ``y`` of shape ``(b,)`` in ``[0, K]``, ``K``
                (``num_classes``) the null class, used for every item when ``None``;
                the blocks then read ``emb = time_embed(t) + class_embed(y)``.

        Returns:
            Tensor of shape ``(b, out_channels, out_size, out_size)`` (the
            prediction, e.g. ``x0`` at the next resolution).

        Raises:
            ValueError: for a non-square or unsupported resolution, a wrong
                channel count, a bad ``out_size``, ``t`` or ``class_labels`` not of shape
                ``(b,)``, or labels outside ``[0, K]`` or without ``num_classes``.
            TypeError: if ``x`` is not floating point or not of the parameters' dtype
                (outside :func:`torch.autocast`), ``t`` is bool/complex, or
                ``class_labels`` is no integer tensor.
        """
        if x.ndim != 4 or x.shape[-1] != x.shape[-2]:
            raise ValueError(f"x must have shape (b, c, r, r), got {tuple(x.shape)}")
        check_input_dtype("x", x, self.input_conv.weight)
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"x has {x.shape[1]} channels; this FlexiUNet accepts {self.in_channels}"
            )
        t = model_timesteps(t, x.shape[0], x.device)
        y = class_labels_of(class_labels, x.shape[0], self.num_classes, x.device, owner="FlexiUNet")
        k, e = self._route(x.shape[-1], out_size)
        o = x.shape[-1] if out_size is None else out_size
        emb = self.time_embed(t)
        if self.class_embed is not None and y is not None:
            emb = emb + class_embedding(self.class_embed, y)
        h = self.in_adapters[k](self.input_conv(x))
        skips = [h]
        for i in range(k, self.num_levels):
            for block in cast(nn.ModuleList, self.encoder[i]):
                h = block(h, emb)
                skips.append(h)
            if i < self.num_levels - 1:
                h = self.downsamples[i](h)
                skips.append(h)
        h = self.middle(h, emb)
        for i in range(self.num_levels - 1, e - 1, -1):
            for block in cast(nn.ModuleList, self.decoder[i]):
                # Above the entry level the encoder was skipped: its skips are zeros.
                skip = skips.pop() if i >= k else torch.zeros_like(h)
                h = block(torch.cat([h, skip], dim=1), emb)
            if i > e:
                # into level i - 1: the skip's size at or below k, o / 2^(i-1-e) above it
                size = skips[-1].shape[-1] if i - 1 >= k else o >> (i - 1 - e)
                h = self.upsamples[i - 1](h, size)
        if h.shape[-1] != o:  # e == k and o > r: no upsample on the path (e.g. 20 -> 28)
            h = F.interpolate(h, size=(o, o), mode="bilinear", align_corners=False)
        out: Tensor = self.head(self.out_adapters[e](h))
        return out

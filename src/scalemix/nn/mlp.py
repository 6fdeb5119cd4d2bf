r"""The 2D study's baseline: an MLP noise predictor on sinusoidal embeddings.

tiny-diffusion's denoiser, as used by "Adaptive Dual-Scale Denoising": each input
coordinate :math:`x_j` and the timestep :math:`t` are embedded with
:class:`~scalemix.nn.SinusoidalEmbedding` (coordinates at scale 25, time at scale 1),
concatenated, and passed through

.. math::
    h_0 = W_{in} [e(x_1), \dots, e(x_d), e(t)] + b_{in}, \qquad
    h_{k+1} = h_k + W_k \operatorname{ReLU}(h_k) + b_k, \qquad
    \hat\epsilon = W_{out} \operatorname{ReLU}(h_K) + b_{out}.

Built with ``num_classes=K``, it is class-conditional: the time features become
:math:`e(t) + c(y)`, ``emb = time_embed(t) + class_embed(y)`` with ``class_embed`` an
``nn.Embedding(K + 1, E)`` whose row ``K`` is the learned null class.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Protocol, cast

import torch
from torch import Tensor, nn

from .._validation import check_input_dtype, class_labels_of, model_timesteps
from ._conditioning import class_embedding, make_class_embedding
from ._config_json import Decoder, as_float, as_int, optional
from ._pretrained import PretrainedMixin
from .embedding import SinusoidalEmbedding

__all__ = ["MLPDenoiser", "MLPResidualBlock"]

#: Rows per block of the no-grad forward of the 2D denoisers on the CPU: a block's
#: activations (``(rows, H)``, or ``(2, rows, H)`` for the dual-scale model) stay in
#: the core's cache, where the elementwise layers run several times faster.
NO_GRAD_BLOCK = 256


def no_grad_block_rows(x: Tensor) -> int | None:
    """Rows per block for a no-grad forward on ``x``, or ``None`` to run it unblocked.

    Blocks are used for eager CPU tensors of more than :data:`NO_GRAD_BLOCK` rows
    outside :func:`torch.vmap`, :func:`torch.compile` and :func:`torch.jit.trace`.
    Each row sees the operations of the unblocked forward in the same order.
    """
    if (
        torch.is_grad_enabled()
        or x.device.type != "cpu"
        or x.ndim != 2
        or x.shape[0] <= NO_GRAD_BLOCK
        or torch.compiler.is_compiling()
        or torch.jit.is_tracing()  # type: ignore[attr-defined, no-untyped-call]
        or torch._C._functorch.is_batchedtensor(x)
    ):
        return None
    return NO_GRAD_BLOCK


def check_vector_inputs(x: Tensor, t: Tensor | int | float, input_dim: int) -> Tensor:
    """Validate ``x`` of shape ``(b, input_dim)`` and return ``t`` as a ``(b,)`` tensor.

    ``t`` may be a number (Python or numpy), a 0-d tensor (broadcast to the batch) or
    have shape ``(b,)``; see :func:`scalemix._validation.model_timesteps`.

    Raises:
        TypeError: if ``t`` is not a number or a tensor, or ``x`` is not floating point.
        ValueError: on any shape mismatch.
    """
    if not isinstance(x, Tensor) or not torch.is_floating_point(x):
        got = x.dtype if isinstance(x, Tensor) else type(x).__name__
        raise TypeError(f"x must be a floating-point tensor, got {got}")
    if x.ndim != 2 or x.shape[1] != input_dim:
        raise ValueError(f"x must have shape (b, {input_dim}), got {tuple(x.shape)}")
    return model_timesteps(t, x.shape[0], x.device)


def check_widths(embedding_dim: int, hidden_dim: int, num_blocks: int, input_dim: int) -> None:
    """Raise ``ValueError`` unless the MLP sizes are valid (``num_blocks`` may be 0)."""
    if hidden_dim < 1 or input_dim < 1 or num_blocks < 0:
        raise ValueError(
            "hidden_dim and input_dim must be positive and num_blocks non-negative, got "
            f"hidden_dim={hidden_dim}, input_dim={input_dim}, num_blocks={num_blocks}"
        )
    if embedding_dim < 4 or embedding_dim % 2:
        raise ValueError(f"embedding_dim must be an even integer >= 4, got {embedding_dim}")


#: the JSON decoders of the six size and scale arguments the 2D denoisers share, and
#: of ``num_classes`` (absent from configs saved before it: unconditional)
MLP_CONFIG_FIELDS: Mapping[str, Decoder] = {
    "embedding_dim": as_int,
    "hidden_dim": as_int,
    "num_blocks": as_int,
    "input_dim": as_int,
    "time_scale": as_float,
    "coord_scale": as_float,
    "num_classes": optional(as_int),
}


class _MLPSizes(Protocol):
    """What :func:`mlp_config` reads of :class:`MLPDenoiser` and ``DualScaleDenoiser``."""

    embedding_dim: int
    hidden_dim: int
    input_dim: int
    num_classes: int | None
    blocks: nn.ModuleList
    time_embedding: SinusoidalEmbedding
    coord_embedding: SinusoidalEmbedding


def mlp_config(model: _MLPSizes) -> dict[str, Any]:
    """The values of :data:`MLP_CONFIG_FIELDS` for a 2D denoiser, for ``config.json``."""
    return {
        "embedding_dim": model.embedding_dim,
        "hidden_dim": model.hidden_dim,
        "num_blocks": len(model.blocks),
        "input_dim": model.input_dim,
        "time_scale": model.time_embedding.scale,
        "coord_scale": model.coord_embedding.scale,
        "num_classes": model.num_classes,
    }


def time_features(
    time_embedding: SinusoidalEmbedding,
    class_embed: nn.Embedding | None,
    t: Tensor,
    labels: Tensor | None,
) -> Tensor:
    """The time features of a 2D denoiser: :math:`e(t)`, plus :math:`c(y)` when
    conditional (``emb = time_embed(t) + class_embed(y)``), shape ``(b, E)``."""
    emb: Tensor = time_embedding(t)
    if class_embed is not None and labels is not None:
        emb = emb + class_embedding(class_embed, labels)
    return emb


class MLPResidualBlock(nn.Module):
    r"""Pre-activation residual layer :math:`h \mapsto h + W\,\operatorname{ReLU}(h) + b`.

    Args:
        width: feature size ``H``.

    Shape:
        ``(*, H) -> (*, H)``.
    """

    def __init__(self, width: int) -> None:
        super().__init__()
        self.linear = nn.Linear(width, width)

    def forward(self, h: Tensor) -> Tensor:
        """Apply the residual layer."""
        out: Tensor = h + self.linear(torch.relu(h))
        return out


class MLPDenoiser(PretrainedMixin, nn.Module):
    r"""The 2D study's baseline noise predictor (see the module docstring).

    ``save_pretrained(folder)`` / ``MLPDenoiser.from_pretrained(folder_or_repo_id)``
    store it as ``config.json`` (the arguments) and ``model.safetensors``
    (:class:`~scalemix.nn.PretrainedMixin`; extra ``scalemix[hub]``).

    Args:
        embedding_dim: size ``E`` of each sinusoidal embedding (128 as published).
        hidden_dim: width ``H`` of the MLP (256).
        num_blocks: number of residual layers ``K`` (3).
        input_dim: data dimension ``d`` (2).
        time_scale: scale of the time embedding (1).
        coord_scale: scale of the coordinate embeddings (25).
        num_classes: ``K`` for a class-conditional model (``class_embed``, an
            ``nn.Embedding(K + 1, E)`` added to the time embedding, row ``K`` the null
            class); ``None``: unconditional.

    Shape:
        - ``x``: ``(b, d)`` noisy points; ``t``: ``(b,)`` timesteps (or a 0-d tensor);
          ``class_labels``: optional int64 ``(b,)`` in ``[0, K]``.
        - output: ``(b, d)``, the predicted noise :math:`\hat\epsilon(x_t, t)`.

    Raises:
        ValueError: non-positive sizes, odd ``embedding_dim``, a ``num_classes`` below 1,
            or inputs of the wrong shape.
    """

    _config_fields: ClassVar[Mapping[str, Decoder]] = MLP_CONFIG_FIELDS

    def __init__(
        self,
        embedding_dim: int = 128,
        hidden_dim: int = 256,
        num_blocks: int = 3,
        input_dim: int = 2,
        time_scale: float = 1.0,
        coord_scale: float = 25.0,
        *,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        check_widths(embedding_dim, hidden_dim, num_blocks, input_dim)
        self.input_dim = input_dim
        self.embedding_dim = embedding_dim
        self.hidden_dim = hidden_dim
        self.time_embedding = SinusoidalEmbedding(embedding_dim, time_scale)
        self.coord_embedding = SinusoidalEmbedding(embedding_dim, coord_scale)
        self.input_layer = nn.Linear((input_dim + 1) * embedding_dim, hidden_dim)
        self.blocks = nn.ModuleList(MLPResidualBlock(hidden_dim) for _ in range(num_blocks))
        self.output_layer = nn.Linear(hidden_dim, input_dim)
        # last, so that the other layers draw the initialisation of the unconditional net
        self.class_embed = make_class_embedding(num_classes, embedding_dim)
        self.num_classes = None if self.class_embed is None else self.class_embed.num_embeddings - 1

    def _constructor_config(self) -> dict[str, Any]:
        return mlp_config(self)

    def _labels(self, x: Tensor, class_labels: Tensor | None) -> Tensor | None:
        return class_labels_of(
            class_labels, x.shape[0], self.num_classes, x.device, owner="MLPDenoiser"
        )

    def embed(self, x: Tensor, t: Tensor | int, *, class_labels: Tensor | None = None) -> Tensor:
        """The network input ``[e(x_1), ..., e(x_d), emb]``, shape ``(b, (d + 1) E)``,
        with ``emb = e(t)``, or ``e(t) + class_embed(y)`` when conditional."""
        t = check_vector_inputs(x, t, self.input_dim)
        check_input_dtype("x", x, self.input_layer.weight)
        labels = self._labels(x, class_labels)
        coords = self.coord_embedding(x).flatten(1)
        time = time_features(self.time_embedding, self.class_embed, t, labels)
        return torch.cat((coords, time), dim=-1).to(x.dtype)

    def forward(self, x: Tensor, t: Tensor | int, *, class_labels: Tensor | None = None) -> Tensor:
        r"""Predict :math:`\hat\epsilon`: ``(b, d), (b,) -> (b, d)``.

        ``t`` may also be a 0-d tensor or a number shared by the batch. ``class_labels``
        (int64, shape ``(b,)``, in ``[0, K]``; ``None``: the null class ``K`` for every
        item) condition a model built with ``num_classes=K``: the time features are
        ``emb = time_embed(t) + class_embed(y)``.

        Raises:
            ValueError: inputs of the wrong shape, labels outside ``[0, K]``, or labels
                for a model built without ``num_classes``.
            TypeError: ``x`` not floating point, or labels that are no integer tensor.
        """
        rows = no_grad_block_rows(x) if isinstance(x, Tensor) else None
        if rows is not None:
            return self._forward_blocks(x, t, rows, class_labels)
        h = self.input_layer(self.embed(x, t, class_labels=class_labels))
        for block in self.blocks:
            h = block(h)
        out: Tensor = self.output_layer(torch.relu(h))
        return out

    def _forward_blocks(
        self, x: Tensor, t: Tensor | int, rows: int, class_labels: Tensor | None
    ) -> Tensor:
        """The no-grad forward in blocks of ``rows`` rows, into three reused buffers.

        Per row the same operations as :meth:`forward` in the same order, so the result
        equals it: ``h <- h + (W relu(h) + b)``, with the time embedding computed once
        when the batch shares one timestep (stride 0), and the class embedding added per row.
        """
        tt = check_vector_inputs(x, t, self.input_dim)
        check_input_dtype("x", x, self.input_layer.weight)
        labels = self._labels(x, class_labels)
        classes = None
        if self.class_embed is not None and labels is not None:
            classes = class_embedding(self.class_embed, labels)
        batch = x.shape[0]
        h_buffer = x.new_empty((min(rows, batch), self.hidden_dim))
        relu_buffer, linear_buffer = torch.empty_like(h_buffer), torch.empty_like(h_buffer)
        shared = self.time_embedding(tt[:1]) if tt.stride(0) == 0 else None
        outputs = []
        for start in range(0, batch, rows):
            stop = min(start + rows, batch)
            h, relu, linear = (b[: stop - start] for b in (h_buffer, relu_buffer, linear_buffer))
            time = (
                shared.expand(stop - start, -1)
                if shared is not None
                else self.time_embedding(tt[start:stop])
            )
            if classes is not None:
                time = time + classes[start:stop]
            coords = self.coord_embedding(x[start:stop]).flatten(1)
            embedded = torch.cat((coords, time), dim=-1).to(x.dtype)
            layer = self.input_layer
            torch.addmm(layer.bias, embedded, layer.weight.t(), out=h)
            for module in self.blocks:
                layer = cast(MLPResidualBlock, module).linear
                torch.clamp_min(h, 0.0, out=relu)
                torch.addmm(layer.bias, relu, layer.weight.t(), out=linear)
                h.add_(linear)
            outputs.append(self.output_layer(torch.clamp_min(h, 0.0, out=relu)))
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs)

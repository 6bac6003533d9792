"""Attention and the transformer block (chapter 02).

The pieces of a decoder-only transformer, each small enough to read in one sitting:

* :func:`attention` -- scaled dot-product attention written out: scores
  ``q @ k^T / sqrt(d)``, the mask (disallowed scores set to ``-inf``), the softmax, dropout
  and the weighted sum of the values;
* :func:`sdpa_attention` -- the same computation through PyTorch's fused
  :func:`torch.nn.functional.scaled_dot_product_attention` (flash / memory-efficient kernels
  on a GPU). Both give the same outputs (tested to 1e-6 in float64);
* :func:`causal_mask` -- which key positions each query may attend to;
  :func:`padded_causal_mask` and :func:`mask_positions` -- the same for a batch of sequences
  of different lengths padded to one (the ``attention_mask`` of
  :meth:`llmkit.gpt.GPT.forward` and :meth:`llmkit.llama.Llama.forward`);
* :class:`KVCache` -- the keys and values of the tokens seen so far, so that generation feeds
  only the new token through the model;
* :class:`MultiHeadAttention` (one fused QKV projection, heads split with ``einops``),
  :class:`MLP`, :class:`Block` (pre-LayerNorm, residual connections) and
  :class:`LearnedPositions`;
* :class:`CrossAttention` (chapter 06) -- the queries come from the sequence being generated,
  the keys and values from an encoder's output ``Z`` (the *memory*), with the source's
  padding mask; used by :mod:`llmkit.seq2seq`;
* the pieces of modern (Llama-style) decoders (chapter 03b, :mod:`llmkit.llama`):
  :class:`RMSNorm`, rotary position embeddings (:func:`rope_frequencies`,
  :func:`rope_angles`, :func:`apply_rope`, in both layouts of :data:`ROPE_LAYOUTS`, and
  :func:`rope_permutation` between them), :class:`SwiGLU` and :func:`repeat_kv` (the
  key/value sharing of grouped-query attention).

Shapes use einops-style names: ``b`` batch, ``t`` query positions, ``s`` key positions,
``h`` heads, ``g`` key/value heads (grouped-query attention), ``d`` head width. Masks are
boolean with ``True`` = "may attend", the convention of
:func:`torch.nn.functional.scaled_dot_product_attention`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn

from llmkit import validate

__all__ = [
    "causal_mask",
    "padded_causal_mask",
    "mask_positions",
    "attention",
    "sdpa_attention",
    "KVCache",
    "MultiHeadAttention",
    "CrossAttention",
    "MLP",
    "Block",
    "LearnedPositions",
    "sinusoidal_positions",
    "ATTENTION_IMPLS",
    "RMSNorm",
    "SwiGLU",
    "ROPE_LAYOUTS",
    "rope_frequencies",
    "rope_angles",
    "apply_rope",
    "rope_permutation",
    "repeat_kv",
]

#: The two attention implementations: PyTorch's fused kernel and the written-out version.
ATTENTION_IMPLS = ("sdpa", "manual")


# ---------------------------------------------------------------------------------------------
# attention


def causal_mask(
    seq_q: int, seq_k: int | None = None, device: torch.device | str | None = None
) -> torch.Tensor:
    """The causal mask: query ``i`` may attend to key ``j`` only if ``j`` is not in its future.

    Args:
        seq_q: number of query positions ``t``.
        seq_k: number of key positions ``s`` (default ``seq_q``). With a KV cache ``s > t``:
            the queries are the *last* ``t`` of the ``s`` positions, so query ``i`` sits at
            absolute position ``s - t + i`` and may attend to keys ``0 .. s - t + i``.
        device: where to build the mask.
    Returns:
        mask: ``(t, s)`` bool, ``True`` = may attend (lower triangle, aligned bottom-right).

    >>> causal_mask(3).int()
    tensor([[1, 0, 0],
            [1, 1, 0],
            [1, 1, 1]], dtype=torch.int32)
    >>> causal_mask(1, 3).int()
    tensor([[1, 1, 1]], dtype=torch.int32)
    """
    if seq_k is None:
        seq_k = seq_q
    ones = torch.ones(seq_q, seq_k, dtype=torch.bool, device=device)
    return torch.tril(ones, diagonal=seq_k - seq_q)


def padded_causal_mask(attention_mask: torch.Tensor, seq_q: int) -> torch.Tensor:
    """The causal mask of a padded batch: real keys only, never the future.

    Query ``i`` (one of the last ``t = seq_q`` of the ``s`` positions) may attend to key
    ``j`` if ``j`` is not in its future and ``j`` is a real token. A *padding* query would
    then have no key at all when it sits before every real token (left padding), and its
    softmax would be ``0 / 0 = NaN``; so every position may also attend to itself. That
    changes nothing for a real query (it attends to itself anyway) and keeps the ignored
    outputs of padding positions finite. Padding keys stay invisible to real queries.

    Args:
        attention_mask: ``(b, s)`` bool, ``True`` = real token, ``False`` = padding.
        seq_q: number of query positions ``t <= s`` (the last ``t``; ``t < s`` with a KV
            cache).
    Returns:
        mask: ``(b, 1, t, s)`` bool, ``True`` = may attend (broadcasts over the heads).

    >>> padded_causal_mask(torch.tensor([[False, True, True]]), 3)[0, 0].int()
    tensor([[1, 0, 0],
            [0, 1, 0],
            [0, 1, 1]], dtype=torch.int32)
    """
    seq_k = attention_mask.shape[-1]
    device = attention_mask.device
    keys = torch.arange(seq_k, device=device)
    queries = torch.arange(seq_k - seq_q, seq_k, device=device)
    itself = queries[:, None] == keys[None, :]  # (t, s)
    allowed = attention_mask[:, None, None, :] & causal_mask(seq_q, seq_k, device=device)
    return allowed | itself  # (b, 1, t, s)


def mask_positions(attention_mask: torch.Tensor, seq_q: int) -> torch.Tensor:
    """The position of each token counted over the real tokens of its row.

    A real token's position is the number of real tokens before it, so a padded row gets the
    positions it would have alone (``[pad, pad, a, b] -> [., ., 0, 1]``). A padding token
    gets the position of the last real token before it, or 0 (its output is ignored).

    Args:
        attention_mask: ``(b, s)`` bool, ``True`` = real token.
        seq_q: return the positions of the last ``t = seq_q`` tokens.
    Returns:
        ``(b, t)`` int64.

    >>> mask_positions(torch.tensor([[False, False, True, True, False]]), 5)
    tensor([[0, 0, 0, 1, 1]])
    """
    counts = attention_mask.long().cumsum(dim=-1)  # real tokens up to and including j
    return (counts - 1).clamp(min=0)[:, attention_mask.shape[-1] - seq_q :]


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    generator: torch.Generator | None = None,
    return_weights: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Scaled dot-product attention, written out.

    ``softmax(q @ k^T / sqrt(d) masked to -inf where mask is False) @ v``, with dropout on
    the attention weights.

    Args:
        q: queries ``(..., t, d)``.
        k: keys ``(..., s, d)``.
        v: values ``(..., s, d_v)``.
        mask: optional bool tensor broadcastable to ``(..., t, s)``, ``True`` = may attend
            (e.g. :func:`causal_mask`). A query row with no allowed key gives NaN, as in
            PyTorch's SDPA.
        dropout_p: probability of zeroing an attention weight (survivors are scaled by
            ``1 / (1 - dropout_p)``); pass 0 at evaluation time.
        generator: random generator for the dropout pattern (reproducible dropout).
        return_weights: also return the attention weights.
    Returns:
        out: ``(..., t, d_v)``; with ``return_weights`` also ``weights: (..., t, s)`` (after
        dropout; each row sums to 1 when ``dropout_p == 0``).
    """
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (..., t, s)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    if dropout_p > 0.0:
        keep = torch.rand(
            weights.shape, generator=generator, device=weights.device, dtype=weights.dtype
        )
        weights = weights * (keep >= dropout_p) / (1.0 - dropout_p)
    out = weights @ v
    return (out, weights) if return_weights else out


def sdpa_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    causal: bool = False,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """Scaled dot-product attention through PyTorch's fused ``scaled_dot_product_attention``.

    The same computation as :func:`attention`, done by PyTorch's fused kernels (flash
    attention or memory-efficient attention on a GPU, a fused C++ kernel on the CPU).

    Args:
        q: queries ``(..., t, d)``.
        k: keys ``(..., s, d)``.
        v: values ``(..., s, d_v)``.
        mask: optional bool tensor broadcastable to ``(..., t, s)``, ``True`` = may attend.
        causal: also apply :func:`causal_mask` ``(t, s)``. When ``s > t`` (a KV cache) the
            queries are the last ``t`` positions (bottom-right alignment; note that SDPA's
            own ``is_causal`` aligns top-left, so this function builds the mask itself then).
        dropout_p: dropout on the attention weights (uses the global random state).
    Returns:
        out: ``(..., t, d_v)``.
    """
    seq_q, seq_k = q.shape[-2], k.shape[-2]
    is_causal = False
    if causal:
        if mask is None and seq_q == seq_k:
            is_causal = True  # lets SDPA pick its fastest causal kernel
        elif seq_q > 1:  # one query at the end of the sequence may attend to every key
            cmask = causal_mask(seq_q, seq_k, device=q.device)
            mask = cmask if mask is None else mask & cmask
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal
    )


# ---------------------------------------------------------------------------------------------
# KV cache


class KVCache:
    """The keys and values of every layer for the tokens seen so far.

    ``cache[i]`` is layer ``i``'s ``(k, v)``, each ``(batch, heads, length, head_dim)``, or
    ``None`` before the first forward pass. A model extends it in place: the attention of a
    new token needs the keys and values of all earlier tokens, and they never change (the
    mask stops earlier tokens from seeing later ones), so they are computed once.

    ``n_layers`` is the number of layers, ``length`` the number of positions cached. ``ids``
    optionally holds the ``(batch, length)`` token ids the cache covers, so a model can
    recompute a cropped window when the cache would outgrow its context
    (:meth:`llmkit.gpt.GPT.forward_with_cache` does).

    The interface of every cache in :mod:`llmkit` (also :class:`llmkit.seq2seq.Seq2SeqCache`):
    ``length``, ``batch_size``, ``reset()`` and ``reorder(indices)`` (beam search).

    >>> cache = KVCache(2)
    >>> cache.n_layers, cache.length
    (2, 0)
    """

    def __init__(self, n_layers: int) -> None:
        self.n_layers = validate.positive_int("n_layers", n_layers)
        self.layers: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * n_layers
        self.ids: torch.Tensor | None = None

    def __getitem__(self, layer: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        return self.layers[layer]

    def __setitem__(self, layer: int, kv: tuple[torch.Tensor, torch.Tensor]) -> None:
        self.layers[layer] = kv

    @property
    def length(self) -> int:
        """Number of positions cached (0 for an empty cache)."""
        first = self.layers[0]
        return 0 if first is None else first[0].shape[-2]

    @property
    def batch_size(self) -> int | None:
        """Batch size of the cached tensors (``None`` for an empty cache)."""
        first = self.layers[0]
        return None if first is None else first[0].shape[0]

    def reset(self) -> None:
        """Empty the cache."""
        self.layers = [None] * self.n_layers
        self.ids = None

    def append_ids(self, ids: torch.Tensor) -> None:
        """Record the ``(batch, t)`` token ids that were just fed through the model."""
        self.ids = ids if self.ids is None else torch.cat([self.ids, ids], dim=1)

    def reorder(self, indices: torch.Tensor) -> KVCache:
        """Select batch rows in place: row ``i`` becomes old row ``indices[i]``.

        Beam search calls this after pruning: the surviving hypotheses keep the cache of the
        beam they extend. ``indices`` is a 1-D LongTensor (its length may differ from the
        batch size, e.g. to expand one prompt into several beams).
        """
        indices = indices.long()
        self.layers = [
            None
            if kv is None
            else (
                kv[0].index_select(0, indices.to(kv[0].device)),
                kv[1].index_select(0, indices.to(kv[1].device)),
            )
            for kv in self.layers
        ]
        if self.ids is not None:
            self.ids = self.ids.index_select(0, indices.to(self.ids.device))
        return self

    def __repr__(self) -> str:
        return f"KVCache(n_layers={self.n_layers}, length={self.length})"


# ---------------------------------------------------------------------------------------------
# modules


class MultiHeadAttention(nn.Module):
    """Multi-head self-attention with one fused QKV projection.

    ``qkv`` maps each token to its query, key and value at once; the ``3 * d_model`` outputs
    are laid out ``(three, heads, head_dim)`` -- the layout of GPT-2's ``c_attn``. Each head
    attends with width ``head_dim = d_model // n_heads``; the heads are concatenated and
    mixed by ``proj``.

    Args:
        d_model: model width.
        n_heads: number of heads; must divide ``d_model``.
        dropout: dropout on the attention weights and on the output (training only).
        bias: biases in ``qkv`` and ``proj``.
        causal: apply the causal mask (decoder); ``False`` for an encoder.
        impl: ``"sdpa"`` (PyTorch's fused kernel, the default) or ``"manual"``
            (:func:`attention`, the teaching path). Same outputs.
        store_weights: keep the attention weights of the last forward pass in
            ``last_weights`` ``(b, h, t, s)``. The fused kernel does not return its weights,
            so while ``store_weights`` is ``True`` the layer runs the manual path, whatever
            ``impl`` says (:attr:`uses_manual_path`). The attribute can be switched later.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        causal: bool = True,
        impl: str = "sdpa",
        store_weights: bool = False,
    ) -> None:
        super().__init__()
        validate.positive_int("d_model", d_model)
        validate.positive_int("n_heads", n_heads)
        validate.divisible("d_model", d_model, "n_heads", n_heads)
        self.d_model = d_model
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.dropout = validate.probability("dropout", dropout)
        self.causal = bool(causal)
        self.impl = validate.one_of("impl", impl, ATTENTION_IMPLS)
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.proj = nn.Linear(d_model, d_model, bias=bias)
        self.resid_dropout = nn.Dropout(self.dropout)
        self.store_weights = validate.boolean("store_weights", store_weights)
        self.last_weights: torch.Tensor | None = None

    @property
    def uses_manual_path(self) -> bool:
        """Whether :func:`attention` runs (``impl="manual"``, or weights are stored)."""
        return self.impl == "manual" or self.store_weights

    def forward(
        self,
        x: torch.Tensor,
        layer_cache: tuple[torch.Tensor, torch.Tensor] | None = None,
        mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Attend.

        Args:
            x: ``(b, t, d_model)``.
            layer_cache: this layer's cached ``(k, v)``, each ``(b, h, s_past, head_dim)``;
                the new tokens sit after them (their queries are the last ``t`` positions).
            mask: optional extra bool mask broadcastable to ``(b, h, t, s)``, ``True`` = may
                attend (e.g. key padding ``mask[:, None, None, :]``), combined with the causal
                mask.
        Returns:
            out: ``(b, t, d_model)``; and the new ``(k, v)``, each ``(b, h, s, head_dim)``
            with ``s = s_past + t`` (store it back in the cache).
        """
        qkv = self.qkv(x)  # (b, t, 3 * d_model), laid out (three h d)
        # split, then move the heads forward: the backward pass then concatenates the three
        # gradients straight into qkv's layout (unbinding a "three" axis would stack them
        # and copy once more)
        q, k, v = (
            rearrange(z, "b t (h d) -> b h t d", h=self.n_heads)
            for z in qkv.split(self.d_model, dim=-1)
        )
        if layer_cache is not None:
            past_k, past_v = layer_cache
            k = torch.cat([past_k, k], dim=-2)
            v = torch.cat([past_v, v], dim=-2)
        p = self.dropout if self.training else 0.0
        if self.uses_manual_path:
            full = mask
            if self.causal:
                cmask = causal_mask(q.shape[-2], k.shape[-2], device=x.device)
                full = cmask if full is None else full & cmask
            y, weights = attention(q, k, v, mask=full, dropout_p=p, return_weights=True)
            if self.store_weights:
                self.last_weights = weights.detach()
        else:
            y = sdpa_attention(q, k, v, mask=mask, causal=self.causal, dropout_p=p)
        y = rearrange(y, "b h t d -> b t (h d)")
        return self.resid_dropout(self.proj(y)), (k, v)

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, n_heads={self.n_heads}, dropout={self.dropout}, "
            f"causal={self.causal}, impl={self.impl!r}"
        )


class CrossAttention(nn.Module):
    """Multi-head cross-attention: queries from ``x``, keys and values from ``memory``.

    In an encoder-decoder the decoder's tokens (``x``, the target so far) ask questions of
    the encoder's output ``Z`` (``memory``, one vector per source token): ``q`` is projected
    from ``x`` by ``q_proj``; ``k`` and ``v`` from ``memory`` by one fused projection
    ``kv_proj`` whose ``2 * d_model`` outputs are laid out ``(two, heads, head_dim)``. There
    is no causal mask (every target position may read the whole source), only the source's
    padding mask: a padded source position is never attended to, so its content changes
    nothing.

    The keys and values depend on the memory only, not on the target, so generation projects
    them once per source (:meth:`project_memory`) and passes them as ``memory_kv`` at every
    step.

    Args:
        d_model: model width (of ``x`` and of ``memory``).
        n_heads: number of heads; must divide ``d_model``.
        dropout: dropout on the attention weights and on the output (training only).
        bias: biases in ``q_proj``, ``kv_proj`` and ``proj``.
        impl: ``"sdpa"`` (PyTorch's fused kernel, the default) or ``"manual"``
            (:func:`attention`). Same outputs.
        store_weights: keep the attention weights of the last forward pass in
            ``last_weights`` ``(b, h, t, s)``: which source tokens each target token read.
            As in :class:`MultiHeadAttention`, this runs the manual path.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        impl: str = "sdpa",
        store_weights: bool = False,
    ) -> None:
        super().__init__()
        validate.positive_int("d_model", d_model)
        validate.positive_int("n_heads", n_heads)
        validate.divisible("d_model", d_model, "n_heads", n_heads)
        self.d_model = d_model
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.dropout = validate.probability("dropout", dropout)
        self.impl = validate.one_of("impl", impl, ATTENTION_IMPLS)
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.kv_proj = nn.Linear(d_model, 2 * d_model, bias=bias)
        self.proj = nn.Linear(d_model, d_model, bias=bias)
        self.resid_dropout = nn.Dropout(self.dropout)
        self.store_weights = validate.boolean("store_weights", store_weights)
        self.last_weights: torch.Tensor | None = None

    @property
    def uses_manual_path(self) -> bool:
        """Whether :func:`attention` runs (``impl="manual"``, or weights are stored)."""
        return self.impl == "manual" or self.store_weights

    def project_memory(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The keys and values of the memory, computed once per source.

        Args:
            memory: the encoder's output ``(b, s, d_model)``.
        Returns:
            ``(k, v)``, each ``(b, h, s, head_dim)``.
        """
        kv = self.kv_proj(memory)  # (b, s, 2 * d_model)
        k, v = rearrange(kv, "b s (two h d) -> two b h s d", two=2, h=self.n_heads)
        return k, v

    def forward(
        self,
        x: torch.Tensor,
        memory: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
        memory_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Attend from ``x`` to the memory.

        Args:
            x: the queries' sequence ``(b, t, d_model)``.
            memory: the encoder's output ``(b, s, d_model)``; or pass ``memory_kv`` instead.
            memory_mask: ``(b, s)`` bool or 0/1 integers, ``True``/1 = a real source token,
                ``False``/0 = padding (never attended to). ``None``: every position is real.
                Every row needs at least one real token (else its output is NaN).
            memory_kv: precomputed ``(k, v)`` from :meth:`project_memory`, each
                ``(b, h, s, head_dim)``; used when given, else ``memory`` is projected.
        Returns:
            out: ``(b, t, d_model)``.

        A memory of batch size 1 is broadcast to the ``b`` rows of ``x`` (one source, many
        hypotheses).
        """
        k, v = self.project_memory(memory) if memory_kv is None else memory_kv
        mask = None if memory_mask is None else memory_mask.bool()[:, None, None, :]  # (b,1,1,s)
        b = x.shape[0]
        if k.shape[0] != b:  # one source shared by every row of x
            k, v = k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1)
            mask = None if mask is None else mask.expand(b, -1, -1, -1)
        q = rearrange(self.q_proj(x), "b t (h d) -> b h t d", h=self.n_heads)
        p = self.dropout if self.training else 0.0
        if self.uses_manual_path:
            y, weights = attention(q, k, v, mask=mask, dropout_p=p, return_weights=True)
            if self.store_weights:
                self.last_weights = weights.detach()
        else:
            y = sdpa_attention(q, k, v, mask=mask, dropout_p=p)
        y = rearrange(y, "b h t d -> b t (h d)")
        return self.resid_dropout(self.proj(y))

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, n_heads={self.n_heads}, dropout={self.dropout}, "
            f"impl={self.impl!r}"
        )


class MLP(nn.Module):
    """The position-wise feed-forward network: ``Linear -> GELU -> Linear -> dropout``.

    GELU uses the tanh approximation by default (GPT-2's ``gelu_new``); BERT uses the exact
    one (``gelu="none"``).

    Args:
        d_model: model width.
        hidden: hidden width (default ``4 * d_model``).
        dropout: dropout on the output (training only).
        bias: biases in both linear layers.
        gelu: ``"tanh"`` (approximation) or ``"none"`` (exact, with ``erf``).
    """

    def __init__(
        self,
        d_model: int,
        hidden: int | None = None,
        dropout: float = 0.0,
        bias: bool = True,
        gelu: str = "tanh",
    ) -> None:
        super().__init__()
        validate.positive_int("d_model", d_model)
        hidden = 4 * d_model if hidden is None else validate.positive_int("hidden", hidden)
        validate.one_of("gelu", gelu, ("tanh", "none"))
        self.fc = nn.Linear(d_model, hidden, bias=bias)
        self.act = nn.GELU(approximate=gelu)
        self.proj = nn.Linear(hidden, d_model, bias=bias)
        self.dropout = nn.Dropout(validate.probability("dropout", dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (..., d_model) -> (..., d_model)``."""
        return self.dropout(self.proj(self.act(self.fc(x))))


class Block(nn.Module):
    """A pre-LayerNorm transformer block.

    ``x = x + attn(ln_1(x))`` then ``x = x + mlp(ln_2(x))``: each sub-layer reads a normalised
    copy of the residual stream and adds its output back (LayerNorm eps 1e-5, as GPT-2).

    Args:
        d_model: model width.
        n_heads: attention heads; must divide ``d_model``.
        dropout: dropout in attention and MLP (training only).
        causal: causal self-attention (decoder) or not (encoder).
        impl: ``"sdpa"`` or ``"manual"`` attention.
        bias: biases in the linear layers and LayerNorms.
        hidden: MLP hidden width (default ``4 * d_model``).
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        dropout: float = 0.0,
        causal: bool = True,
        impl: str = "sdpa",
        bias: bool = True,
        hidden: int | None = None,
    ) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(d_model, eps=1e-5, bias=bias)
        self.attn = MultiHeadAttention(
            d_model, n_heads, dropout=dropout, bias=bias, causal=causal, impl=impl
        )
        self.ln_2 = nn.LayerNorm(d_model, eps=1e-5, bias=bias)
        self.mlp = MLP(d_model, hidden=hidden, dropout=dropout, bias=bias)

    def forward(
        self,
        x: torch.Tensor,
        layer_cache: tuple[torch.Tensor, torch.Tensor] | None = None,
        mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """``x: (b, t, d_model)`` -> ``(x: (b, t, d_model), (k, v))`` (see
        :meth:`MultiHeadAttention.forward` for ``layer_cache`` and ``mask``)."""
        a, kv = self.attn(self.ln_1(x), layer_cache=layer_cache, mask=mask)
        x = x + a
        x = x + self.mlp(self.ln_2(x))
        return x, kv


class LearnedPositions(nn.Module):
    """Learned absolute position embeddings: one trained vector per position.

    ``weight: (max_len, d_model)``, initialised from N(0, 0.02^2) like GPT-2. Positions at or
    beyond ``max_len`` have no embedding: the model's context window.
    """

    def __init__(self, max_len: int, d_model: int) -> None:
        super().__init__()
        self.max_len = validate.positive_int("max_len", max_len)
        self.d_model = validate.positive_int("d_model", d_model)
        self.weight = nn.Parameter(torch.empty(max_len, d_model))
        nn.init.normal_(self.weight, mean=0.0, std=0.02)

    def forward(self, positions: torch.Tensor | int, offset: int = 0) -> torch.Tensor:
        """Embed positions.

        Args:
            positions: a LongTensor of positions, any shape ``(...)``, each in
                ``[0, max_len)``; or an int ``t``, meaning ``arange(offset, offset + t)``
                (a ``ValueError`` if ``offset + t > max_len``).
            offset: first position for the int form (e.g. the length of a KV cache).
        Returns:
            ``(..., d_model)`` (``(t, d_model)`` for an int).
        """
        if isinstance(positions, int):
            self.check_length(offset + positions)
            positions = torch.arange(offset, offset + positions, device=self.weight.device)
        return F.embedding(positions, self.weight)

    def check_length(self, length: int) -> None:
        """Raise a ``ValueError`` if a sequence of ``length`` positions exceeds ``max_len``.

        The context window: the one check a language model's forward pass keeps (an int
        comparison, no device read), since a longer input is an easy mistake.
        """
        if length > self.max_len:
            raise ValueError(
                f"sequence length {length} exceeds the context window "
                f"(max_len={self.max_len} positions); crop the input"
            )

    def extra_repr(self) -> str:
        return f"max_len={self.max_len}, d_model={self.d_model}"


def sinusoidal_positions(n_positions: int, dim: int, base: float = 10000.0) -> torch.Tensor:
    """The fixed position code of the original transformer (Vaswani et al., 2017, §3.5).

    ``PE[p, 2i] = sin(p / base^(2i/dim))`` and ``PE[p, 2i+1] = cos(p / base^(2i/dim))``:
    pairs of coordinates that turn at geometrically spaced frequencies, so that the code of
    position ``p + k`` is a fixed linear map (a rotation per pair) of the code of ``p``. The
    frequencies are those of :func:`rope_frequencies`, which rotary embeddings apply to
    queries and keys instead; here they are computed in float64 (the table is an
    initialisation, not a match for Hugging Face's float32 RoPE).

    Args:
        n_positions: number of positions (>= 1).
        dim: width of each code, even (>= 2).
        base: the longest wavelength is ``2 * pi * base``.
    Returns:
        ``(n_positions, dim)`` float32, entries in ``[-1, 1]``.
    """
    validate.positive_int("n_positions", n_positions)
    validate.positive_int("dim", dim)
    if dim % 2:
        raise ValueError(f"dim must be even (pairs of sin and cos), got {dim}")
    validate.positive("base", base)
    position = torch.arange(n_positions, dtype=torch.float64)[:, None]  # (n, 1)
    inv_freq = base ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)  # (dim / 2,)
    angles = position * inv_freq  # (n, dim / 2)
    table = torch.empty(n_positions, dim, dtype=torch.float64)
    table[:, 0::2] = angles.sin()
    table[:, 1::2] = angles.cos()
    return table.float()


# ---------------------------------------------------------------------------------------------
# modern decoders (chapter 03b): RMSNorm, rotary position embeddings, SwiGLU, GQA

#: The two layouts of rotary embeddings: which coordinates of a head form a rotated pair.
ROPE_LAYOUTS = ("adjacent", "rotate_half")


class RMSNorm(nn.Module):
    """Root-mean-square normalisation (Zhang & Sennrich, 2019), as in Llama.

    ``y = x / sqrt(mean(x**2) + eps) * weight``: LayerNorm without the mean subtraction and
    without a bias. The statistic is computed in float32 whatever the input's dtype (as
    Hugging Face's ``LlamaRMSNorm``), then cast back before the gain is applied.

    Args:
        d_model: width of the normalised (last) dimension.
        eps: added to the mean square (Llama 1e-5 or 1e-6).
    """

    def __init__(self, d_model: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.d_model = validate.positive_int("d_model", d_model)
        self.eps = validate.positive("eps", eps)
        self.weight = nn.Parameter(torch.ones(d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (..., d_model) -> (..., d_model)``."""
        x32 = x.float()
        normed = x32 * torch.rsqrt(x32.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return self.weight * normed.to(x.dtype)

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, eps={self.eps}"


class SwiGLU(nn.Module):
    """The gated feed-forward network of Llama (Shazeer, 2020): ``down(silu(gate(x)) * up(x))``.

    Two input projections instead of one: ``up`` carries the values, ``silu(gate(x))``
    decides how much of each hidden unit passes. Three matrices of ``d_model x hidden``
    (GPT's :class:`MLP` has two), so ``hidden`` is usually about ``8/3 * d_model`` for the
    same parameter count as a ``4 * d_model`` MLP.

    Args:
        d_model: model width.
        hidden: hidden width.
        bias: biases in the three projections (Llama has none).
        dropout: dropout on the output (training only).
    """

    def __init__(self, d_model: int, hidden: int, bias: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        validate.positive_int("d_model", d_model)
        validate.positive_int("hidden", hidden)
        self.gate = nn.Linear(d_model, hidden, bias=bias)
        self.up = nn.Linear(d_model, hidden, bias=bias)
        self.down = nn.Linear(hidden, d_model, bias=bias)
        self.dropout = nn.Dropout(validate.probability("dropout", dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (..., d_model) -> (..., d_model)``."""
        return self.dropout(self.down(F.silu(self.gate(x)) * self.up(x)))


def rope_frequencies(head_dim: int, base: float = 10000.0) -> torch.Tensor:
    """The rotation speeds of rotary position embeddings (Su et al., RoFormer).

    Pair ``i`` of a head (``i = 0 .. head_dim/2 - 1``) turns by ``theta_i = base **
    (-2i / head_dim)`` radians per position: the first pairs fast, the last ones slowly.
    Computed in float32 exactly as Hugging Face's ``LlamaRotaryEmbedding`` does.

    Args:
        head_dim: width of a head, even.
        base: the RoPE base (10,000 in RoFormer and Llama 2; 100,000 in SmolLM2).
    Returns:
        ``(head_dim // 2,)`` float32.

    >>> rope_frequencies(4, base=100.0)
    tensor([1.0000, 0.1000])
    """
    validate.positive_int("head_dim", head_dim)
    validate.divisible("head_dim", head_dim, "2", 2)
    validate.positive("base", base)
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim
    return 1.0 / (base**exponents)


def rope_angles(
    positions: torch.Tensor, inv_freq: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosines and sines of the rotation angles ``position * theta_i``.

    Computed in ``inv_freq``'s dtype (float32 for a model, as in ``transformers``: at
    position 8,000 an angle is then off by up to about 5e-4 rad; pass float64 frequencies
    for exact angles).

    Args:
        positions: ``(t,)`` (or any ``(...)``) integer positions.
        inv_freq: ``(head_dim // 2,)`` from :func:`rope_frequencies`.
    Returns:
        ``cos, sin``, each ``(t, head_dim // 2)`` (``(..., head_dim // 2)``), in
        ``inv_freq``'s dtype.
    """
    angles = positions.to(inv_freq.dtype)[..., None] * inv_freq  # (t, d/2)
    return angles.cos(), angles.sin()


# which coordinates form pair i: (2i, 2i+1) or (i, i + d/2); split into the two halves
_ROPE_SPLIT = {"adjacent": "... (d two) -> two ... d", "rotate_half": "... (two d) -> two ... d"}
_ROPE_MERGE = {"adjacent": "two ... d -> ... (d two)", "rotate_half": "two ... d -> ... (two d)"}


def apply_rope(
    x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, layout: str = "adjacent"
) -> torch.Tensor:
    """Rotate each pair of coordinates of ``x`` by its angle: rotary position embedding.

    Pair ``i`` ``(x1, x2)`` at position ``p`` becomes ``(x1 cos - x2 sin, x1 sin + x2 cos)``
    with angle ``p * theta_i``. Applied to queries and keys, the score ``q_m . k_n`` then
    depends on the positions only through ``m - n``.

    The two layouts differ only in which coordinates are paired (:data:`ROPE_LAYOUTS`):

    * ``"adjacent"``: ``(x[2i], x[2i+1])``, the RoFormer paper, Meta's original Llama
      checkpoints and GGUF files (llama.cpp);
    * ``"rotate_half"``: ``(x[i], x[i + d/2])``, Hugging Face ``transformers`` checkpoints
      (its ``rotate_half``).

    A model trained with one layout runs with the other once the output rows of its query
    and key projections are permuted within each head (:func:`rope_permutation`).

    Args:
        x: ``(b, h, t, d)`` queries or keys (any ``(..., t, d)``).
        cos, sin: ``(t, d // 2)`` from :func:`rope_angles`, broadcast over the leading axes
            (or ``(b, 1, t, d // 2)``: one set of positions per row of a padded batch).
        layout: one of :data:`ROPE_LAYOUTS`.
    Returns:
        ``(b, h, t, d)``, in ``x``'s dtype.
    """
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    x1, x2 = rearrange(x, _ROPE_SPLIT[layout], two=2)  # each (b, h, t, d/2)
    rotated = torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos])  # (2, b, h, t, d/2)
    return rearrange(rotated, _ROPE_MERGE[layout])


def rope_permutation(head_dim: int, to: str = "rotate_half") -> torch.Tensor:
    """The order of a head's coordinates that turns one RoPE layout into the other.

    ``w[perm]`` (rows of one head's query or key projection) converts a model from
    ``"adjacent"`` to ``"rotate_half"`` with ``to="rotate_half"``, and back with
    ``to="adjacent"``. This is the permutation llama.cpp's converter applies to Hugging
    Face weights (and ``transformers``' GGUF loader undoes). For a whole projection
    ``(n_heads * head_dim, d_model)``, apply it head by head (:func:`llmkit.llama.permute_qk`).

    Args:
        head_dim: width of a head, even.
        to: the layout to convert to.
    Returns:
        ``(head_dim,)`` LongTensor.

    >>> rope_permutation(6).tolist()
    [0, 2, 4, 1, 3, 5]
    >>> rope_permutation(6, to="adjacent").tolist()
    [0, 3, 1, 4, 2, 5]
    """
    validate.positive_int("head_dim", head_dim)
    validate.divisible("head_dim", head_dim, "2", 2)
    validate.one_of("to", to, ROPE_LAYOUTS)
    index = torch.arange(head_dim)
    if to == "rotate_half":  # the i-th "first" coordinate was 2i, the i-th "second" 2i+1
        return rearrange(index, "(d two) -> (two d)", two=2)
    return rearrange(index, "(two d) -> (d two)", two=2)


def repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """Share each key/value head among ``n_rep`` query heads (grouped-query attention).

    Query head ``j`` reads key/value head ``j // n_rep`` (the layout of Llama and of
    ``transformers``' ``repeat_kv``). With ``n_rep = 1`` this is multi-head attention.

    Args:
        x: keys or values ``(b, g, s, d)``.
        n_rep: query heads per key/value head.
    Returns:
        ``(b, g * n_rep, s, d)`` (``x`` itself when ``n_rep == 1``).
    """
    if n_rep == 1:
        return x
    return repeat(x, "b g s d -> b (g r) s d", r=n_rep)

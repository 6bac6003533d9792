"""Llama: the modern decoder-only transformer (chapter 03b).

``Llama(config)(ids)`` maps token ids ``(batch, seq)`` to next-token logits
``(batch, seq, vocab)``, like :class:`llmkit.gpt.GPT`, with what changed since GPT-2:

* **pre-norm RMSNorm** (:class:`~llmkit.nn.RMSNorm`) instead of LayerNorm, and **no biases**
  anywhere;
* **rotary position embeddings** (:func:`~llmkit.nn.apply_rope`) on the queries and keys of
  every layer instead of learned absolute positions added to the input: no position table,
  so nothing stops the model from running past its trained length (``block_size``), only
  its quality degrades there;
* a **SwiGLU** feed-forward network (:class:`~llmkit.nn.SwiGLU`);
* **grouped-query attention**: ``n_head`` query heads share ``n_kv_head`` key/value heads
  (``n_head // n_kv_head`` queries per key/value head, :func:`~llmkit.nn.repeat_kv`), so the
  KV cache is ``n_head / n_kv_head`` times smaller. ``n_kv_head == n_head`` is multi-head
  attention, ``n_kv_head == 1`` multi-query attention;
* an output projection tied to the token embedding (``tie_embeddings=True``, SmolLM2) or
  its own matrix (Llama 2 and 3).

**RoPE layouts.** Which two coordinates of a head are rotated together depends on where the
weights come from (``config.rope_layout``, see :func:`~llmkit.nn.apply_rope`): GGUF files and
Meta's original checkpoints need ``"adjacent"`` (pairs ``(2i, 2i+1)``), Hugging Face
checkpoints ``"rotate_half"`` (pairs ``(i, i + d/2)``). Loading weights with the wrong
layout gives a model that runs but produces nonsense. :func:`permute_qk` converts query/key
weights from one layout to the other (:meth:`Llama.from_hf_llama` can do it on loading).

**KV cache and context window.** The cache is :class:`llmkit.nn.KVCache`; it stores the keys
(already rotated) and values of the ``n_kv_head`` key/value heads. :meth:`Llama.forward`
accepts any length (RoPE has no table to run out of); generation and
:meth:`Llama.forward_with_cache` keep to ``block_size`` exactly like :class:`~llmkit.gpt.GPT`:
the model sees the last ``block_size`` tokens, and when the cache would overflow, the cropped
window is recomputed (positions restart at 0).

Pretrained weights: :func:`llmkit.gguf.load_llama` reads a GGUF file,
:func:`llmkit.pretrained.smollm2` loads SmolLM2-135M-Instruct.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import torch
from einops import rearrange
from torch import nn

from llmkit import validate
from llmkit.lm import CausalLM
from llmkit.nn import (
    ATTENTION_IMPLS,
    ROPE_LAYOUTS,
    KVCache,
    RMSNorm,
    SwiGLU,
    apply_rope,
    attention,
    causal_mask,
    mask_positions,
    padded_causal_mask,
    repeat_kv,
    rope_angles,
    rope_frequencies,
    rope_permutation,
    sdpa_attention,
)

__all__ = ["LlamaConfig", "Llama", "LlamaAttention", "LlamaBlock", "permute_qk", "count_parameters"]


@dataclasses.dataclass
class LlamaConfig:
    """The shape of a :class:`Llama`, validated on construction.

    Args:
        vocab_size: number of token ids ``V`` (>= 1).
        block_size: context window, the most positions generation lets the model see (>= 1;
            the trained context length of a pretrained model).
        n_layer: number of transformer blocks (>= 1).
        n_head: query heads per block (>= 1); must divide ``d_model``, and ``d_model //
            n_head`` (the head width) must be even (RoPE rotates pairs).
        d_model: model width (>= 1).
        hidden: SwiGLU hidden width (default ``None``: ``4 * d_model``; Llama uses about
            ``8/3 * d_model``, SmolLM2-135M 1,536 for width 576).
        n_kv_head: key/value heads (default ``None``: ``n_head``, i.e. multi-head attention);
            must divide ``n_head``.
        rope_base: the RoPE base ``theta`` (10,000 in Llama 2, 100,000 in SmolLM2).
        rope_layout: ``"adjacent"`` (GGUF, Meta) or ``"rotate_half"`` (Hugging Face): which
            coordinates are rotated together (see the module docstring).
        norm_eps: the RMSNorm epsilon.
        tie_embeddings: the output projection is the token embedding.
        dropout: dropout probability in ``[0, 1)`` (attention weights and residual branches;
            training only).
        impl: attention implementation, ``"sdpa"`` (fused PyTorch kernel, default) or
            ``"manual"`` (written out); same outputs.
    """

    vocab_size: int
    block_size: int
    n_layer: int
    n_head: int
    d_model: int
    hidden: int | None = None
    n_kv_head: int | None = None
    rope_base: float = validate.checked(validate.positive, default=10000.0)
    rope_layout: str = validate.checked(validate.one_of, ROPE_LAYOUTS, default="adjacent")
    norm_eps: float = validate.checked(validate.positive, default=1e-5)
    tie_embeddings: bool = True
    dropout: float = validate.checked(validate.probability, default=0.0)
    impl: str = validate.checked(validate.one_of, ATTENTION_IMPLS, default="sdpa")

    def __post_init__(self) -> None:
        validate.config_fields(self)
        if self.hidden is None:
            self.hidden = 4 * self.d_model
        if self.n_kv_head is None:
            self.n_kv_head = self.n_head
        validate.divisible("d_model", self.d_model, "n_head", self.n_head)
        validate.divisible("n_head", self.n_head, "n_kv_head", self.n_kv_head)
        if self.head_dim % 2:
            raise ValueError(
                f"the head width d_model // n_head (={self.head_dim}) must be even: RoPE "
                "rotates pairs of coordinates"
            )

    @property
    def head_dim(self) -> int:
        """Width of one attention head, ``d_model // n_head``."""
        return self.d_model // self.n_head

    @property
    def n_rep(self) -> int:
        """Query heads per key/value head, ``n_head // n_kv_head``."""
        return self.n_head // self.n_kv_head

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (for checkpoints)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LlamaConfig:
        """The inverse of :meth:`to_dict`; unknown keys are an error."""
        return validate.config_from_dict(cls, d)

    def to_hf_llama_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``transformers.LlamaConfig`` describing the same model.

        The weights of a Hugging Face model use the ``"rotate_half"`` layout: load them with
        :meth:`Llama.from_hf_llama`, which permutes them if this config says ``"adjacent"``.
        """
        return {
            "vocab_size": self.vocab_size,
            "max_position_embeddings": self.block_size,
            "num_hidden_layers": self.n_layer,
            "num_attention_heads": self.n_head,
            "num_key_value_heads": self.n_kv_head,
            "hidden_size": self.d_model,
            "intermediate_size": self.hidden,
            "rope_theta": self.rope_base,
            "rms_norm_eps": self.norm_eps,
            "tie_word_embeddings": self.tie_embeddings,
            "attention_bias": False,
            "mlp_bias": False,
            "hidden_act": "silu",
            "attention_dropout": self.dropout,
            "bos_token_id": None,
            "eos_token_id": None,
            "pad_token_id": None,
        }


def count_parameters(config: LlamaConfig) -> int:
    """The number of parameters of a :class:`Llama` with ``config``, by formula.

    Per block: two RMSNorm gains (``2 d``), the query and output projections (``2 d * h *
    hd``), the key and value projections (``2 d * g * hd``, smaller with GQA) and the three
    SwiGLU matrices (``3 d * hidden``); plus the token embedding ``V d``, the final norm ``d``
    and, when untied, the output projection ``V d``. SmolLM2-135M: 134,515,008.
    """
    c = config
    d, hd = c.d_model, c.head_dim
    per_block = 2 * d + 2 * d * c.n_head * hd + 2 * d * c.n_kv_head * hd + 3 * d * c.hidden
    embeddings = c.vocab_size * d * (1 if c.tie_embeddings else 2)
    return embeddings + c.n_layer * per_block + d


def permute_qk(weight: torch.Tensor, n_heads: int, to: str = "rotate_half") -> torch.Tensor:
    """Convert a query or key projection between the two RoPE layouts.

    The output rows of each head are reordered by :func:`~llmkit.nn.rope_permutation`, so a
    model with the permuted weights and the other ``rope_layout`` computes the same scores
    (and the same logits). ``to="rotate_half"`` turns GGUF / Meta weights into Hugging Face
    ones (llama.cpp's converter does the reverse, ``to="adjacent"``).

    Args:
        weight: ``(n_heads * head_dim, d_model)`` (the ``nn.Linear`` layout).
        n_heads: heads of this projection (``n_head`` for queries, ``n_kv_head`` for keys).
        to: the layout of the result.
    Returns:
        a new ``(n_heads * head_dim, d_model)`` tensor.
    """
    validate.positive_int("n_heads", n_heads)
    validate.divisible("weight.shape[0]", weight.shape[0], "n_heads", n_heads)
    head_dim = weight.shape[0] // n_heads
    perm = rope_permutation(head_dim, to=to).to(weight.device)
    w = rearrange(weight, "(h d) c -> h d c", h=n_heads)
    return rearrange(w[:, perm], "h d c -> (h d) c").contiguous()


class LlamaAttention(nn.Module):
    """Causal self-attention with rotary embeddings and grouped-query attention.

    ``q_proj: d_model -> n_head * head_dim``, ``k_proj`` and ``v_proj: d_model -> n_kv_head *
    head_dim``, ``proj: n_head * head_dim -> d_model``, no biases.
    """

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        c = config
        self.n_head, self.n_kv_head, self.head_dim = c.n_head, c.n_kv_head, c.head_dim
        self.rope_layout, self.impl, self.dropout = c.rope_layout, c.impl, c.dropout
        self.q_proj = nn.Linear(c.d_model, c.n_head * c.head_dim, bias=False)
        self.k_proj = nn.Linear(c.d_model, c.n_kv_head * c.head_dim, bias=False)
        self.v_proj = nn.Linear(c.d_model, c.n_kv_head * c.head_dim, bias=False)
        self.proj = nn.Linear(c.n_head * c.head_dim, c.d_model, bias=False)
        self.resid_dropout = nn.Dropout(c.dropout)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        layer_cache: tuple[torch.Tensor, torch.Tensor] | None = None,
        mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Attend.

        Args:
            x: ``(b, t, d_model)``.
            cos, sin: ``(t, head_dim // 2)`` rotation angles of the ``t`` new positions
                (:func:`~llmkit.nn.rope_angles`), or ``(b, 1, t, head_dim // 2)`` when each
                row has its own positions (a padded batch).
            layer_cache: this layer's cached ``(k, v)``, each ``(b, g, s_past, head_dim)``
                (keys already rotated); the new tokens come after them.
            mask: optional ``(b, 1, t, s)`` bool, ``True`` = may attend, causality included
                (:func:`~llmkit.nn.padded_causal_mask`); ``None``: the causal mask.
        Returns:
            out ``(b, t, d_model)``; and the new ``(k, v)``, each ``(b, g, s, head_dim)``
            with ``s = s_past + t`` (store it back in the cache).
        """
        q = rearrange(self.q_proj(x), "b t (h d) -> b h t d", h=self.n_head)
        k = rearrange(self.k_proj(x), "b t (g d) -> b g t d", g=self.n_kv_head)
        v = rearrange(self.v_proj(x), "b t (g d) -> b g t d", g=self.n_kv_head)
        q = apply_rope(q, cos, sin, self.rope_layout)
        k = apply_rope(k, cos, sin, self.rope_layout)
        if layer_cache is not None:
            k = torch.cat([layer_cache[0], k], dim=-2)
            v = torch.cat([layer_cache[1], v], dim=-2)
        n_rep = self.n_head // self.n_kv_head
        k_all, v_all = repeat_kv(k, n_rep), repeat_kv(v, n_rep)  # (b, h, s, d)
        p = self.dropout if self.training else 0.0
        if mask is not None:  # a padded batch: the mask already holds causality
            attend = attention if self.impl == "manual" else sdpa_attention
            y = attend(q, k_all, v_all, mask=mask, dropout_p=p)
        elif self.impl == "manual":
            mask = causal_mask(q.shape[-2], k.shape[-2], device=x.device)
            y = attention(q, k_all, v_all, mask=mask, dropout_p=p)
        else:
            y = sdpa_attention(q, k_all, v_all, causal=True, dropout_p=p)
        y = rearrange(y, "b h t d -> b t (h d)")
        return self.resid_dropout(self.proj(y)), (k, v)


class LlamaBlock(nn.Module):
    """A pre-norm Llama block: ``x + attn(norm_1(x))``, then ``x + mlp(norm_2(x))``."""

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        c = config
        self.norm_1 = RMSNorm(c.d_model, eps=c.norm_eps)
        self.attn = LlamaAttention(c)
        self.norm_2 = RMSNorm(c.d_model, eps=c.norm_eps)
        self.mlp = SwiGLU(c.d_model, c.hidden, bias=False, dropout=c.dropout)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        layer_cache: tuple[torch.Tensor, torch.Tensor] | None = None,
        mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """``x: (b, t, d_model)`` -> ``(x: (b, t, d_model), (k, v))`` (see
        :meth:`LlamaAttention.forward`)."""
        a, kv = self.attn(self.norm_1(x), cos, sin, layer_cache=layer_cache, mask=mask)
        x = x + a
        x = x + self.mlp(self.norm_2(x))
        return x, kv


# (transformers key, llmkit key) of one block, relative to "model.layers.{i}." / "blocks.{i}."
_HF_BLOCK_KEYS = (
    ("input_layernorm.weight", "norm_1.weight"),
    ("self_attn.q_proj.weight", "attn.q_proj.weight"),
    ("self_attn.k_proj.weight", "attn.k_proj.weight"),
    ("self_attn.v_proj.weight", "attn.v_proj.weight"),
    ("self_attn.o_proj.weight", "attn.proj.weight"),
    ("post_attention_layernorm.weight", "norm_2.weight"),
    ("mlp.gate_proj.weight", "mlp.gate.weight"),
    ("mlp.up_proj.weight", "mlp.up.weight"),
    ("mlp.down_proj.weight", "mlp.down.weight"),
)


def _config_from_hf(hf: Any, rope_layout: str) -> LlamaConfig:
    """A :class:`LlamaConfig` from a ``transformers.LlamaConfig``, rejecting what Llama lacks."""
    for flag in ("attention_bias", "mlp_bias"):
        if getattr(hf, flag, False):
            raise ValueError(f"{flag} must be False: llmkit's Llama has no biases")
    if getattr(hf, "hidden_act", "silu") != "silu":
        raise ValueError(f"hidden_act must be 'silu' (SwiGLU), got {hf.hidden_act!r}")
    head_dim = getattr(hf, "head_dim", None)
    if head_dim not in (None, hf.hidden_size // hf.num_attention_heads):
        raise ValueError(f"head_dim must be hidden_size // num_attention_heads, got {head_dim}")
    rope = getattr(hf, "rope_parameters", None) or getattr(hf, "rope_scaling", None) or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type != "default":
        raise ValueError(f"only plain RoPE is supported, got rope_type={rope_type!r}")
    base = rope.get("rope_theta", getattr(hf, "rope_theta", 10000.0))
    return LlamaConfig(
        vocab_size=hf.vocab_size,
        block_size=hf.max_position_embeddings,
        n_layer=hf.num_hidden_layers,
        n_head=hf.num_attention_heads,
        n_kv_head=hf.num_key_value_heads or hf.num_attention_heads,
        d_model=hf.hidden_size,
        hidden=hf.intermediate_size,
        rope_base=float(base),
        rope_layout=rope_layout,
        norm_eps=float(hf.rms_norm_eps),
        tie_embeddings=bool(hf.tie_word_embeddings),
    )


class Llama(CausalLM):
    """A Llama-style decoder-only language model (see the module docstring).

    Modules: ``wte`` (token embedding ``(V, d_model)``), ``blocks`` (``n_layer``
    :class:`LlamaBlock`), ``norm_f`` (:class:`~llmkit.nn.RMSNorm`) and ``lm_head``
    (``d_model -> V``, no bias; ``lm_head.weight is wte.weight`` when tied). The RoPE
    frequencies follow from the config: they are computed in float32 on first use on a
    device (:meth:`rope_frequencies`), whatever the model's dtype, and never saved.

    Initialisation as :class:`~llmkit.gpt.GPT`: weights N(0, 0.02^2), RMSNorm gains 1, the
    two projections into the residual stream (``attn.proj``, ``mlp.down``) std ``0.02 /
    sqrt(2 * n_layer)``.
    """

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        if not isinstance(config, LlamaConfig):
            raise TypeError(f"config must be a LlamaConfig, got {type(config).__name__}")
        self.config = c = config
        self.wte = nn.Embedding(c.vocab_size, c.d_model)
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList([LlamaBlock(c) for _ in range(c.n_layer)])
        self.norm_f = RMSNorm(c.d_model, eps=c.norm_eps)
        self.lm_head = nn.Linear(c.d_model, c.vocab_size, bias=False)
        if c.tie_embeddings:
            self.lm_head.weight = self.wte.weight
        self._inv_freq: dict[torch.device, torch.Tensor] = {}
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """(Re-)initialise every parameter as described in the class docstring."""
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
            elif isinstance(module, RMSNorm):
                nn.init.ones_(module.weight)
        residual_std = 0.02 / math.sqrt(2 * self.config.n_layer)
        for block in self.blocks:
            nn.init.normal_(block.attn.proj.weight, mean=0.0, std=residual_std)
            nn.init.normal_(block.mlp.down.weight, mean=0.0, std=residual_std)

    def rope_frequencies(self, device: torch.device) -> torch.Tensor:
        """The RoPE frequencies ``(head_dim // 2,)`` in float32 on ``device`` (cached)."""
        inv_freq = self._inv_freq.get(device)
        if inv_freq is None:
            c = self.config
            inv_freq = rope_frequencies(c.head_dim, c.rope_base).to(device)
            self._inv_freq[device] = inv_freq
        return inv_freq

    # -- forward ----------------------------------------------------------------------------

    def forward(
        self,
        ids: torch.Tensor,
        cache: KVCache | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Next-token logits: ``lm_head`` applied to :meth:`hidden_states`.

        Args:
            ids, cache, attention_mask: as in :meth:`hidden_states`.
        Returns:
            logits: ``(b, t, vocab_size)``; ``logits[:, i]`` scores the token after ``ids[:, i]``
            (at padding positions: finite values to be ignored).
        """
        return self.lm_head(self.hidden_states(ids, cache, attention_mask))  # (b, t, vocab_size)

    def hidden_states(
        self,
        ids: torch.Tensor,
        cache: KVCache | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The final hidden states: the last block's output after ``norm_f``, what ``lm_head``
        reads (the features of a reward model or any other head on the decoder).

        Args:
            ids: token ids ``(b, t)``, any ``t`` (past ``block_size`` the model runs on
                positions it was never trained on).
            cache: optional :class:`~llmkit.nn.KVCache` from :meth:`new_cache`, extended in
                place: ``ids`` are the positions ``cache.length .. cache.length + t - 1``
                (use :meth:`forward_with_cache`, which checks its arguments and crops).
            attention_mask: optional ``(b, cache.length + t)`` padding mask, ``True``/1 =
                real token (:mod:`llmkit.lm`): padding keys are never attended to and the
                rotary position of a token is the number of real tokens before it in its row.
        Returns:
            ``(b, t, d_model)``; ``[:, i]`` has read the cache and ``ids[:, : i + 1]`` (at padding
            positions: finite values to be ignored).
        """
        past = 0 if cache is None else cache.length
        t = ids.shape[1]
        inv_freq = self.rope_frequencies(ids.device)
        mask = None
        if attention_mask is None:
            positions = torch.arange(past, past + t, device=ids.device)
            cos, sin = rope_angles(positions, inv_freq)  # (t, hd // 2)
        else:
            real = self.check_attention_mask(attention_mask, ids, cache)  # (b, past + t)
            cos, sin = rope_angles(mask_positions(real, t), inv_freq)  # (b, t, hd // 2)
            cos, sin = cos[:, None], sin[:, None]  # (b, 1, t, hd // 2): broadcast over heads
            mask = padded_causal_mask(real, t)  # (b, 1, t, past + t)
        x = self.drop(self.wte(ids))  # (b, t, d_model)
        for i, block in enumerate(self.blocks):
            layer_cache = None if cache is None else cache[i]
            x, kv = block(x, cos, sin, layer_cache=layer_cache, mask=mask)
            if cache is not None:
                cache[i] = kv
        if cache is not None:
            cache.append_ids(ids)
        return self.norm_f(x)  # (b, t, d_model)

    def num_parameters(self, non_embedding: bool = False) -> int:
        """Number of parameters, a tied embedding counted once (equals :func:`count_parameters`).

        Args:
            non_embedding: leave out the token embedding (and the output projection when it
                is untied).
        """
        n = sum(p.numel() for p in self.parameters())  # parameters() yields tied ones once
        if non_embedding:
            n -= self.wte.weight.numel()
            if not self.config.tie_embeddings:
                n -= self.lm_head.weight.numel()
        return n

    # -- Hugging Face Llama interop ---------------------------------------------------------

    @classmethod
    def from_hf_llama(cls, model: Any, rope_layout: str = "rotate_half") -> Llama:
        """Load a Hugging Face ``LlamaForCausalLM`` (same weights, dtype and device).

        Args:
            model: a ``transformers.LlamaForCausalLM`` (plain RoPE, no biases).
            rope_layout: the layout of the returned model. Hugging Face weights are in
                ``"rotate_half"`` layout and are copied as they are; with ``"adjacent"`` the
                query and key projections are permuted (:func:`permute_qk`). Both give the
                same logits.
        Returns:
            a :class:`Llama` giving the same logits.
        """
        validate.one_of("rope_layout", rope_layout, ROPE_LAYOUTS)
        if not isinstance(model, nn.Module) or not hasattr(model, "config"):
            raise TypeError(f"model must be a transformers LlamaForCausalLM, got {type(model)}")
        config = _config_from_hf(model.config, rope_layout)
        sd = {k.removeprefix("model."): v for k, v in model.state_dict().items()}
        ours: dict[str, torch.Tensor] = {
            "wte.weight": sd.pop("embed_tokens.weight"),
            "norm_f.weight": sd.pop("norm.weight"),
        }
        lm_head = sd.pop("lm_head.weight", None)
        if not config.tie_embeddings:
            ours["lm_head.weight"] = lm_head
        for i in range(config.n_layer):
            for hf_key, key in _HF_BLOCK_KEYS:
                ours[f"blocks.{i}.{key}"] = sd.pop(f"layers.{i}.{hf_key}")
        sd = {k: v for k, v in sd.items() if not k.endswith("rotary_emb.inv_freq")}
        if sd:
            raise ValueError(f"unexpected keys in the Llama state dict: {sorted(sd)}")
        if rope_layout == "adjacent":
            for i in range(config.n_layer):
                for name, heads in (("q_proj", config.n_head), ("k_proj", config.n_kv_head)):
                    key = f"blocks.{i}.attn.{name}.weight"
                    ours[key] = permute_qk(ours[key], heads, to="adjacent")
        return cls.from_state_dict(ours, config)

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, torch.Tensor], config: LlamaConfig) -> Llama:
        """A model with ``config`` whose parameters are the tensors of ``state_dict``.

        Keys are llmkit's (``wte.weight``, ``blocks.0.attn.q_proj.weight``, ...); with a tied
        config ``lm_head.weight`` may be absent (it is ignored if present). The model takes
        the tensors' dtype and device. Nothing is initialised randomly first (the model is
        built on the ``meta`` device and the tensors assigned), so loading is fast.
        """
        sd = dict(state_dict)
        if config.tie_embeddings:
            sd.pop("lm_head.weight", None)
        with torch.device("meta"):
            model = cls(config)
        missing, unexpected = model.load_state_dict(sd, strict=False, assign=True)
        missing = [k for k in missing if not (config.tie_embeddings and k == "lm_head.weight")]
        if missing or unexpected:
            raise ValueError(f"state dict mismatch: missing {missing}, unexpected {unexpected}")
        if config.tie_embeddings:
            model.lm_head.weight = model.wte.weight
        return model

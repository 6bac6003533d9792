"""GPT: a decoder-only transformer language model (chapter 03).

``GPT(config)(ids)`` maps token ids ``(batch, seq)`` to next-token logits
``(batch, seq, vocab)``: token embedding + learned position embedding, ``n_layer``
pre-LayerNorm blocks of causal self-attention and MLP (:mod:`llmkit.nn`), a final LayerNorm
and the output projection, whose weight *is* the token embedding (weight tying).

Training predicts every next token at once (:meth:`GPT.loss`); generation feeds one token at
a time and keeps the keys and values of earlier tokens in a :class:`~llmkit.nn.KVCache`
(:meth:`GPT.forward_with_cache`, :meth:`GPT.generate`).

The architecture is GPT-2's, parameter for parameter: :meth:`GPT.from_hf_gpt2` loads a
Hugging Face ``GPT2LMHeadModel`` (or its state dict) and :meth:`GPT.to_hf_gpt2_state_dict`
exports one. Hugging Face stores GPT-2's linear layers as ``Conv1D`` with weights
``(in, out)``; ``nn.Linear`` stores ``(out, in)``, so those four weights are transposed.

**The context window.** Position embeddings exist for ``block_size`` positions only.
:meth:`GPT.forward` raises a ``ValueError`` for longer inputs (``sequence length 70
exceeds the context window``). Generation crops instead: the model sees the last
``block_size`` tokens. With a KV cache, when ``cache.length + new tokens > block_size``, the
cache is dropped and the cropped window recomputed from scratch (cached keys carry their
absolute positions, so they cannot simply be shifted). Cached generation therefore equals
generation by full recomputation on the cropped window, token for token.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from llmkit import validate
from llmkit.lm import CausalLM
from llmkit.nn import (
    ATTENTION_IMPLS,
    Block,
    KVCache,
    LearnedPositions,
    mask_positions,
    padded_causal_mask,
)

__all__ = ["GPTConfig", "GPT"]

# GPT-2's sizes, all with 64-wide heads: used to infer n_head from a bare state dict.
_GPT2_HEADS = {768: 12, 1024: 16, 1280: 20, 1600: 25}


@dataclasses.dataclass
class GPTConfig:
    """The shape of a :class:`GPT`, validated on construction.

    Args:
        vocab_size: number of token ids ``V`` (>= 1).
        block_size: context window, the most positions the model can see (>= 1).
        n_layer: number of transformer blocks (>= 1).
        n_head: attention heads per block (>= 1); must divide ``d_model``.
        d_model: model width (>= 1).
        dropout: dropout probability in ``[0, 1)`` (embeddings, attention weights, residual
            branches; training only).
        bias: biases in the linear layers and LayerNorms (GPT-2 has them).
        impl: attention implementation, ``"sdpa"`` (fused PyTorch kernel, default) or
            ``"manual"`` (written out); same outputs.
    """

    vocab_size: int
    block_size: int
    n_layer: int
    n_head: int
    d_model: int
    dropout: float = validate.checked(validate.probability, default=0.0)
    bias: bool = True
    impl: str = validate.checked(validate.one_of, ATTENTION_IMPLS, default="sdpa")

    def __post_init__(self) -> None:
        validate.config_fields(self)
        validate.divisible("d_model", self.d_model, "n_head", self.n_head)

    @property
    def head_dim(self) -> int:
        """Width of one attention head, ``d_model // n_head``."""
        return self.d_model // self.n_head

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (for checkpoints)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> GPTConfig:
        """The inverse of :meth:`to_dict`; unknown keys are an error."""
        return validate.config_from_dict(cls, d)

    def to_hf_gpt2_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``transformers.GPT2Config`` describing the same model.

        ``transformers`` is not imported here; ``GPT2Config(**config.to_hf_gpt2_kwargs())``
        builds a ``GPT2LMHeadModel`` that :meth:`GPT.to_hf_gpt2_state_dict` loads into.
        """
        if not self.bias:
            raise ValueError("GPT-2 has biases; a config with bias=False has no GPT-2 twin")
        return {
            "vocab_size": self.vocab_size,
            "n_positions": self.block_size,
            "n_embd": self.d_model,
            "n_layer": self.n_layer,
            "n_head": self.n_head,
            "resid_pdrop": self.dropout,
            "embd_pdrop": self.dropout,
            "attn_pdrop": self.dropout,
            "activation_function": "gelu_new",
            "layer_norm_epsilon": 1e-5,
            "bos_token_id": None,
            "eos_token_id": None,
        }


def _hf_key_map(n_layer: int) -> list[tuple[str, str, bool]]:
    """``(hf_key, llmkit_key, transpose)`` for every GPT-2 tensor except the tied lm_head.

    HF keys are relative to ``transformer.``.
    """
    keys = [("wte.weight", "wte.weight", False), ("wpe.weight", "wpe.weight", False)]
    for i in range(n_layer):
        h, b = f"h.{i}.", f"blocks.{i}."
        for hf, ours, transpose in (
            ("ln_1", "ln_1", False),
            ("attn.c_attn", "attn.qkv", True),
            ("attn.c_proj", "attn.proj", True),
            ("ln_2", "ln_2", False),
            ("mlp.c_fc", "mlp.fc", True),
            ("mlp.c_proj", "mlp.proj", True),
        ):
            keys.append((f"{h}{hf}.weight", f"{b}{ours}.weight", transpose))
            keys.append((f"{h}{hf}.bias", f"{b}{ours}.bias", False))
    keys += [("ln_f.weight", "ln_f.weight", False), ("ln_f.bias", "ln_f.bias", False)]
    return keys


def _config_from_hf(hf: Any) -> GPTConfig:
    """A :class:`GPTConfig` from a ``transformers.GPT2Config``, rejecting what GPT lacks."""
    act = getattr(hf, "activation_function", "gelu_new")
    if act not in ("gelu_new", "gelu_pytorch_tanh"):
        raise ValueError(
            f"activation_function must be 'gelu_new' or 'gelu_pytorch_tanh' (GELU, tanh "
            f"approximation), got {act!r}"
        )
    eps = getattr(hf, "layer_norm_epsilon", 1e-5)
    if eps != 1e-5:
        raise ValueError(f"layer_norm_epsilon must be 1e-5, got {eps}")
    n_inner = getattr(hf, "n_inner", None)
    if n_inner not in (None, 4 * hf.n_embd):
        raise ValueError(f"n_inner must be None or 4 * n_embd = {4 * hf.n_embd}, got {n_inner}")
    for flag, wanted in (
        ("scale_attn_weights", True),
        ("scale_attn_by_inverse_layer_idx", False),
        ("reorder_and_upcast_attn", False),
    ):
        if getattr(hf, flag, wanted) != wanted:
            raise ValueError(f"{flag} must be {wanted} (as in GPT-2), got {getattr(hf, flag)}")
    return GPTConfig(
        vocab_size=hf.vocab_size,
        block_size=hf.n_positions,
        n_layer=hf.n_layer,
        n_head=hf.n_head,
        d_model=hf.n_embd,
        dropout=float(getattr(hf, "resid_pdrop", 0.0)),
    )


class GPT(CausalLM):
    """A GPT-2-style decoder-only language model.

    Modules: ``wte`` (token embedding ``(V, d_model)``), ``wpe``
    (:class:`~llmkit.nn.LearnedPositions`, ``(block_size, d_model)``), ``drop``, ``blocks``
    (``n_layer`` :class:`~llmkit.nn.Block`), ``ln_f`` and ``lm_head`` (``d_model -> V``, no
    bias, ``lm_head.weight is wte.weight``).

    Initialisation (GPT-2 / nanoGPT): weights N(0, 0.02^2), biases 0, LayerNorm 1 and 0; the
    two projections that write into the residual stream in each block (``attn.proj`` and
    ``mlp.proj``) get std ``0.02 / sqrt(2 * n_layer)``, so the variance of the residual stream
    does not grow with depth (it receives ``2 * n_layer`` such additions).
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        if not isinstance(config, GPTConfig):
            raise TypeError(f"config must be a GPTConfig, got {type(config).__name__}")
        self.config = config
        c = config
        self.wte = nn.Embedding(c.vocab_size, c.d_model)
        self.wpe = LearnedPositions(c.block_size, c.d_model)
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(
            [
                Block(c.d_model, c.n_head, dropout=c.dropout, impl=c.impl, bias=c.bias)
                for _ in range(c.n_layer)
            ]
        )
        self.ln_f = nn.LayerNorm(c.d_model, eps=1e-5, bias=c.bias)
        self.lm_head = nn.Linear(c.d_model, c.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # weight tying: one (V, d_model) matrix
        self.reset_parameters()

    # -- initialisation ---------------------------------------------------------------------

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """(Re-)initialise every parameter as described in the class docstring."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding | LearnedPositions):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        residual_std = 0.02 / math.sqrt(2 * self.config.n_layer)
        for block in self.blocks:
            nn.init.normal_(block.attn.proj.weight, mean=0.0, std=residual_std)
            nn.init.normal_(block.mlp.proj.weight, mean=0.0, std=residual_std)

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
        """The final hidden states: the last block's output after ``ln_f``, what ``lm_head``
        reads (the features of a reward model or any other head on the decoder).

        Args:
            ids: token ids ``(b, t)``, ``t <= block_size``.
            cache: optional :class:`~llmkit.nn.KVCache` from :meth:`new_cache`, extended in
                place: ``ids`` are the positions ``cache.length .. cache.length + t - 1`` and
                attend to the cached keys and values as well as to each other (use
                :meth:`forward_with_cache`, which checks its arguments and crops).
            attention_mask: optional ``(b, cache.length + t)`` padding mask, ``True``/1 =
                real token (:mod:`llmkit.lm`): padding keys are never attended to and the
                position of a token is the number of real tokens before it in its row. The
                padded length ``cache.length + t`` must still fit in ``block_size``.
        Returns:
            ``(b, t, d_model)``; ``[:, i]`` has read the cache and ``ids[:, : i + 1]`` (at padding
            positions: finite values to be ignored).
        """
        past = 0 if cache is None else cache.length
        t = ids.shape[1]
        mask = None
        if attention_mask is None:
            pos = self.wpe(t, offset=past)  # (t, d_model)
        else:
            real = self.check_attention_mask(attention_mask, ids, cache)  # (b, past + t)
            self.wpe.check_length(past + t)  # the padded length must fit as well
            pos = self.wpe(mask_positions(real, t))  # (b, t, d_model)
            mask = padded_causal_mask(real, t)  # (b, 1, t, past + t)
        x = self.drop(self.wte(ids) + pos)  # (b, t, d_model)
        for i, block in enumerate(self.blocks):
            x, kv = block(x, layer_cache=None if cache is None else cache[i], mask=mask)
            if cache is not None:
                cache[i] = kv
        if cache is not None:
            cache.append_ids(ids)
        return self.ln_f(x)  # (b, t, d_model)

    def num_parameters(self, non_embedding: bool = False) -> int:
        """Number of parameters, the tied embedding counted once.

        Args:
            non_embedding: leave out the token and position embeddings (Kaplan et al.'s ``N``,
                about ``12 * n_layer * d_model**2``).
        """
        n = sum(p.numel() for p in self.parameters())  # parameters() yields tied ones once
        if non_embedding:
            n -= self.wte.weight.numel() + self.wpe.weight.numel()
        return n

    # -- Hugging Face GPT-2 interop ---------------------------------------------------------

    @classmethod
    def from_hf_gpt2(cls, model_or_state_dict: Any, config: Any = None) -> GPT:
        """Load Hugging Face GPT-2 weights.

        Args:
            model_or_state_dict: a ``transformers.GPT2LMHeadModel`` / ``GPT2Model``, or its
                state dict (keys with or without the ``transformer.`` prefix).
            config: a :class:`GPTConfig` or ``transformers.GPT2Config``. Default: the model's
                own config; for a bare state dict every size is read from the tensor shapes,
                except ``n_head``, which no shape reveals: it is inferred only for GPT-2's
                widths (768, 1024, 1280, 1600: 64-wide heads), else pass ``config``.
        Returns:
            a :class:`GPT` with the same weights, dtype and device, giving the same logits.
        """
        hf_config = None
        if isinstance(model_or_state_dict, nn.Module):
            hf_config = getattr(model_or_state_dict, "config", None)
            raw = model_or_state_dict.state_dict()
        elif isinstance(model_or_state_dict, Mapping):
            raw = model_or_state_dict
        else:
            raise TypeError(
                "model_or_state_dict must be a transformers GPT-2 model or a state dict, got "
                f"{type(model_or_state_dict).__name__}"
            )
        sd: dict[str, torch.Tensor] = {}
        for key, value in raw.items():
            if key.endswith((".attn.bias", ".attn.masked_bias")):
                continue  # causal-mask buffers of older transformers versions
            sd[key.removeprefix("transformer.")] = value
        if "wte.weight" not in sd or "wpe.weight" not in sd:
            raise ValueError("not a GPT-2 state dict: wte.weight / wpe.weight missing")

        if config is None:
            config = hf_config
        if config is not None and not isinstance(config, GPTConfig):
            config = _config_from_hf(config)
        if config is None:
            vocab_size, d_model = sd["wte.weight"].shape
            if d_model not in _GPT2_HEADS:
                raise ValueError(
                    f"cannot infer n_head from a state dict of width {d_model}; pass "
                    "config=GPTConfig(...) or the transformers model"
                )
            n_layer = 0
            while f"h.{n_layer}.ln_1.weight" in sd:
                n_layer += 1
            config = GPTConfig(
                vocab_size=int(vocab_size),
                block_size=int(sd["wpe.weight"].shape[0]),
                n_layer=n_layer,
                n_head=_GPT2_HEADS[int(d_model)],
                d_model=int(d_model),
            )
        if not config.bias:
            raise ValueError("GPT-2 has biases: config.bias must be True")

        model = cls(config)
        params = dict(model.named_parameters())
        missing = []
        with torch.no_grad():
            for hf_key, key, transpose in _hf_key_map(config.n_layer):
                if hf_key not in sd:
                    missing.append(hf_key)
                    continue
                value = sd.pop(hf_key)
                if transpose:
                    value = value.t()
                if value.shape != params[key].shape:
                    raise ValueError(
                        f"{hf_key}: expected shape {tuple(params[key].shape)} for {config}, "
                        f"got {tuple(value.shape)}"
                    )
                params[key].copy_(value)
        if missing:
            raise ValueError(f"missing GPT-2 weights: {missing}")
        lm_head = sd.pop("lm_head.weight", None)
        if lm_head is not None and not torch.equal(lm_head.to(model.wte.weight), model.wte.weight):
            raise ValueError("lm_head.weight differs from wte.weight: GPT ties them, GPT-2 does")
        if sd:
            raise ValueError(f"unexpected keys in the GPT-2 state dict: {sorted(sd)}")
        wte = raw.get("transformer.wte.weight", raw.get("wte.weight"))
        return model.to(device=wte.device, dtype=wte.dtype)

    def to_hf_gpt2_state_dict(self) -> dict[str, torch.Tensor]:
        """Export the weights as a Hugging Face ``GPT2LMHeadModel`` state dict.

        Keys ``transformer.wte.weight``, ..., ``transformer.ln_f.bias`` and ``lm_head.weight``
        (the same tensor as ``transformer.wte.weight``: tied). ``Conv1D`` weights are
        transposed to ``(in, out)``. Load with ``GPT2LMHeadModel(GPT2Config(
        **model.config.to_hf_gpt2_kwargs())).load_state_dict(sd)``.
        """
        if not self.config.bias:
            raise ValueError("GPT-2 has biases: this model was built with bias=False")
        params = dict(self.named_parameters())
        out: dict[str, torch.Tensor] = {}
        for hf_key, key, transpose in _hf_key_map(self.config.n_layer):
            value = params[key].detach()
            out[f"transformer.{hf_key}"] = value.t().contiguous() if transpose else value.clone()
        out["lm_head.weight"] = out["transformer.wte.weight"]
        return out

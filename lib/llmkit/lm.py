"""What every decoder-only language model of the course shares (:class:`~llmkit.gpt.GPT`,
:class:`~llmkit.llama.Llama`): the decoding protocol of :mod:`llmkit.decoding` with a KV cache,
the next-token loss, and ``generate``.

A subclass defines ``config`` (with ``vocab_size``, ``block_size`` and ``n_layer``) and
``forward(ids, cache=None, attention_mask=None) -> logits``, which extends a given
:class:`~llmkit.nn.KVCache` in place. Everything here builds on those two.

**Padded batches.** Sequences of different lengths share a batch when they are padded to one
length and ``attention_mask`` ``(b, t_total)`` says which tokens are real (``True``/1) and
which are padding (``False``/0); ``t_total`` covers the cached tokens and the new ones.
Padding keys are never attended to, and positions count real tokens only (GPT's learned
positions, Llama's rotary angles), so each row's logits at its real positions are those of
the row alone. Left padding (``[pad, pad, a, b, c]``) suits generation: every row's last
token is in the last column. :meth:`CausalLM.check_attention_mask` is the one validation of
the mask (shape, values, a real token in every row), done by ``forward`` when a mask is
given; :func:`llmkit.decoding.generate_batch` builds on it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from llmkit import validate
from llmkit.nn import KVCache

__all__ = ["CausalLM", "CroppedContext"]


class CausalLM(nn.Module):
    """The base class of the course's decoders: cache protocol, loss and generation."""

    config: Any

    def new_cache(self) -> KVCache:
        """An empty :class:`~llmkit.nn.KVCache` with one slot per layer."""
        return KVCache(self.config.n_layer)

    def check_attention_mask(
        self, attention_mask: Any, ids: torch.Tensor, cache: KVCache | None = None
    ) -> torch.Tensor:
        """Validate a padding mask for ``forward(ids, cache, attention_mask)``.

        Args:
            attention_mask: ``(b, t_total)`` bool, or integers / floats holding only 0 and 1,
                ``True``/1 = real token; ``t_total = cache.length + t`` covers the cached
                tokens and the new ``ids`` ``(b, t)``. Every row needs at least one real
                token.
            ids: the new token ids ``(b, t)``.
            cache: the cache the new tokens extend (``None``: none).
        Returns:
            the mask as a bool tensor on ``ids``' device.
        """
        if not isinstance(attention_mask, torch.Tensor):
            raise TypeError(
                "attention_mask must be a torch.Tensor (True/1 = real token), got "
                f"{type(attention_mask).__name__}"
            )
        past = 0 if cache is None else cache.length
        want = (ids.shape[0], past + ids.shape[1])
        if tuple(attention_mask.shape) != want:
            raise ValueError(
                f"attention_mask must have shape (batch, cached + new tokens) = {want}, got "
                f"{tuple(attention_mask.shape)}"
            )
        if attention_mask.dtype != torch.bool:
            if attention_mask.dtype.is_complex or not bool(
                ((attention_mask == 0) | (attention_mask == 1)).all()
            ):
                raise ValueError(
                    "attention_mask must be bool or hold only 0 and 1 (1 = real token), got "
                    f"dtype {attention_mask.dtype} with other values"
                )
            attention_mask = attention_mask != 0
        empty = ~attention_mask.any(dim=1)
        if bool(empty.any()):
            rows = empty.nonzero().flatten().tolist()
            raise ValueError(f"attention_mask must have a real token in every row; rows {rows}")
        return attention_mask.to(ids.device)

    def forward_with_cache(
        self,
        ids: torch.Tensor,
        cache: KVCache | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, KVCache]:
        """Feed new tokens through the model, reusing and extending a KV cache.

        The decoding protocol of :mod:`llmkit.decoding`: the first call passes the prompt
        (and a fresh cache), later calls only the newly chosen tokens.

        If ``cache.length + t`` exceeds ``block_size``, the model keeps only the last
        ``block_size`` tokens (the cached ids followed by ``ids``): the cache is dropped and
        this window recomputed, so the result equals running :meth:`forward` on the cropped
        window.

        A padded batch (``attention_mask``) is never cropped: it raises a ``ValueError``
        instead, since cutting the same number of columns from every row would keep fewer
        real tokens in the shorter rows than cropping each row alone.

        Args:
            ids: new token ids ``(b, t)``.
            cache: the cache of the earlier tokens (``None``: a new, empty one).
            attention_mask: optional ``(b, cache.length + t)`` padding mask, ``True``/1 =
                real token (see the module docstring); the caller keeps it, one column per
                token fed so far.
        Returns:
            logits ``(b, min(t, block_size), vocab_size)`` for the last new positions, and
            the (same, extended) cache.
        """
        validate.int_ids("ids", ids, self.config.vocab_size)
        if cache is None:
            cache = self.new_cache()
        if not isinstance(cache, KVCache) or cache.n_layers != self.config.n_layer:
            raise ValueError(f"cache must be a KVCache from model.new_cache(), got {cache!r}")
        if cache.length and cache.batch_size != ids.shape[0]:
            raise ValueError(f"cache holds batch size {cache.batch_size}, ids {ids.shape[0]}")
        t, block = ids.shape[1], self.config.block_size
        if cache.length + t <= block:
            if attention_mask is None:
                return self.forward(ids, cache), cache
            return self.forward(ids, cache, attention_mask=attention_mask), cache
        if attention_mask is not None:
            raise ValueError(
                f"a padded batch of {cache.length + t} positions exceeds block_size={block}; "
                "it is not cropped (crop the prompts or generate fewer tokens)"
            )
        if cache.length:
            if cache.ids is None:
                raise ValueError(
                    "cache would exceed block_size and holds no token ids to recompute a "
                    "cropped window from; fill it through the model's forward"
                )
            ids = torch.cat([cache.ids, ids], dim=1)
        window = ids[:, -block:]
        cache.reset()
        logits = self.forward(window, cache)
        return logits[:, -min(t, block) :], cache

    def loss(self, ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of the next-token predictions.

        Args:
            ids: inputs ``(b, t)``.
            targets: the next tokens ``(b, t)`` (usually ``ids`` shifted by one); entries equal
                to -100 are ignored.
        Returns:
            scalar loss (nats per token).
        """
        validate.int_ids("ids", ids, self.config.vocab_size)
        if not isinstance(targets, torch.Tensor) or targets.shape != ids.shape:
            got = tuple(targets.shape) if isinstance(targets, torch.Tensor) else type(targets)
            raise ValueError(f"targets must have the shape of ids {tuple(ids.shape)}, got {got}")
        logits = self(ids)
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten().long(), ignore_index=-100)

    @torch.no_grad()
    def generate(self, ids: torch.Tensor, max_new_tokens: int, **kwargs: Any) -> torch.Tensor:
        """Continue ``ids`` with :func:`llmkit.decoding.generate` (greedy by default).

        The model is put in evaluation mode for the call (and restored afterwards). Contexts
        longer than ``block_size`` are cropped to their last ``block_size`` tokens, with and
        without the KV cache (see the module docstring).

        Args:
            ids: prompt ids, as :func:`llmkit.decoding.generate` accepts them (``(b, t)``).
            max_new_tokens: number of tokens to add.
            **kwargs: decoding options (``strategy``, ``temperature``, ``top_k``, ``top_p``,
                ``beam_width``, ``generator``, ``use_cache``, ``eos_token_id``).
        Returns:
            prompt followed by the generated tokens, as :func:`llmkit.decoding.generate`
            returns them.
        """
        from llmkit import decoding  # imported here: llmkit.decoding builds on the models

        validate.int_ids("ids", ids, self.config.vocab_size, dims=(1, 2))
        was_training = self.training
        self.eval()
        try:
            return decoding.generate(CroppedContext(self), ids, max_new_tokens, **kwargs)
        finally:
            self.train(was_training)


class CroppedContext:
    """A language model as :mod:`llmkit.decoding` sees it: never past its context window.

    Calling it runs the model on the last ``block_size`` tokens of ``ids``;
    ``forward_with_cache`` already recomputes a cropped window when the cache would overflow.
    """

    def __init__(self, model: CausalLM) -> None:
        self.model = model
        self.new_cache = model.new_cache
        self.forward_with_cache = model.forward_with_cache

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        """``ids: (b, t) -> logits (b, min(t, block_size), vocab)`` for the last positions."""
        return self.model(ids[..., -self.model.config.block_size :])

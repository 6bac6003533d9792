"""Direct preference optimisation (DPO): sequence log-probabilities, the loss, training data.

DPO (Rafailov et al., 2023) trains a policy :math:`\\pi_\\theta` on preference pairs
``(prompt x, chosen y_w, rejected y_l)`` without a reward model and without sampling. The
KL-regularised objective of RLHF has the optimal policy
:math:`\\pi^*(y|x) \\propto \\pi_\\text{ref}(y|x)\\exp(r(x,y)/\\beta)`; solved for the reward,
:math:`r(x,y) = \\beta\\log\\frac{\\pi^*(y|x)}{\\pi_\\text{ref}(y|x)} + \\beta\\log Z(x)`, and
put into the Bradley-Terry model, :math:`Z(x)` cancels and the negative log-likelihood of the
preferences becomes a loss on the policy alone::

    h    = (log pi(y_w|x) - log pi_ref(y_w|x)) - (log pi(y_l|x) - log pi_ref(y_l|x))
    loss = -log sigmoid(beta * h)                            # loss_type="sigmoid"

Quick start::

    from llmkit import dpo
    from llmkit.train import TrainConfig, train

    pair = dpo.encode_preference(prompt_messages, "chosen reply", "rejected reply", tokenizer)
    get_batch = dpo.dpo_batch_fn(train_pairs, val_pairs, batch_size=8, pad_id=0,
                                 reference=frozen_copy_of_the_model)   # ref log-probs cached
    train(model, TrainConfig(max_steps=200, lr=1e-5), get_batch, dpo.dpo_loss_fn(beta=0.1))
    dpo.evaluate_pairs(model, val_pairs, pad_id=0, ref_logps=..., beta=0.1)  # metrics

**Shift convention.** As in :mod:`llmkit.sft`, ``labels`` are *aligned with* ``ids``:
``labels[:, i] == ids[:, i]`` where token ``i`` belongs to the response, else
:data:`IGNORE_INDEX`. :func:`sequence_logprobs` shifts: it feeds ``ids[:, :-1]`` (the logits
at position ``i`` predict token ``i + 1``) and scores them against ``labels[:, 1:]``, so a
model with a context of ``n`` tokens takes sequences of ``n + 1`` ids, as in
:func:`llmkit.sft.pad_collate`. The first token is never scored (nothing predicts it).

**Implicit rewards.** A sequence's reward is :math:`\\beta(\\log\\pi(y|x) - \\log
\\pi_\\text{ref}(y|x))`, the reward model that the policy implies (up to the prompt's
:math:`\\beta\\log Z(x)`, which is the same for both responses and cancels in every
comparison). :func:`preference_metrics` reports their means, how often the chosen
response's is higher (accuracy; a tie counts one half, as in :mod:`llmkit.reward`) and
the mean margin (trl logs the same four numbers, the last two as ``rewards/accuracies``
and ``rewards/margins``; its accuracy counts strict wins only, so a tie counts 0).

**Variants** (``loss_type``, ``label_smoothing``):

* ``"sigmoid"`` with ``label_smoothing = eps`` (conservative DPO, cDPO;
  Mitchell, 2023): the labels are assumed flipped with probability ``eps``:
  ``(1 - eps) * -log sigmoid(beta h) + eps * -log sigmoid(-beta h)``; ``eps = 0`` is DPO.
* ``"ipo"`` (IPO; Azar et al., 2024): ``(h - 1 / (2 beta))**2``, a squared loss whose
  minimum is a finite margin, where DPO's keeps rewarding a larger ``h``. (trl's IPO
  divides each log-probability by the response length first; pass such averages here if
  that is what you want: the loss takes whatever log-probabilities it is given.)

The loss of a batch is the mean over its pairs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from llmkit import validate
from llmkit.chat import CHATML_DEFAULT_SYSTEM, TEMPLATES
from llmkit.reward import pair_outcomes
from llmkit.sft import IGNORE_INDEX, SFTExample, encode_conversation

__all__ = [
    "IGNORE_INDEX",
    "LOSS_TYPES",
    "PreferencePair",
    "sequence_logprobs",
    "dpo_loss",
    "preference_metrics",
    "encode_preference",
    "encode_preferences",
    "pad_pairs",
    "reference_logprobs",
    "dpo_batch_fn",
    "dpo_loss_fn",
    "pair_logprobs",
    "evaluate_pairs",
    "last_exchange",
    "TopBlocks",
    "states_logprobs",
    "CachedPairs",
    "cache_pairs",
    "cached_batch_fn",
    "cached_dpo_loss_fn",
    "evaluate_cached",
    "HH_DPO_RECIPES",
    "hh_dpo_recipe",
    "hh_preferences",
    "hh_dpo",
    "SENTIMENT_DPO_RECIPES",
    "sentiment_pairs",
    "reward_and_kl",
    "sentiment_dpo",
]

LOSS_TYPES = ("sigmoid", "ipo")


# --------------------------------------------------------------------- log-probabilities


def _logits(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    out = model(ids) if mask is None else model(ids, attention_mask=mask)
    logits = getattr(out, "logits", out)  # transformers' models return an output object
    if not isinstance(logits, torch.Tensor) or logits.dim() != 3:
        raise ValueError("model(ids) must return logits of shape (b, t, vocab)")
    return logits


def _check_int(name: str, x: Any) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype.is_floating_point or x.dtype.is_complex or x.dtype == torch.bool:
        raise TypeError(f"{name} must hold integers, got dtype {x.dtype}")
    if x.dim() != 2:
        raise ValueError(f"{name} must have shape (b, t), got {tuple(x.shape)}")
    return x


def sequence_logprobs(
    model: nn.Module,
    ids: torch.Tensor,
    labels: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """The log-probability of each row's response: the sum over its target tokens.

    .. math:: \\log\\pi(y|x) = \\sum_{i \\ge 1,\\ labels_i \\ne -100} \\log p(ids_i | ids_{<i})

    Args:
        model: ``model(ids) -> logits (b, t, V)`` (or an object with ``.logits``); with an
            ``attention_mask`` it is called as ``model(ids, attention_mask=mask)``. Called
            in whatever mode it is in, with gradients if they are enabled.
        ids: ``(b, t)`` token ids, ``t >= 2``, padded on either side.
        labels: ``(b, t)``, aligned with ``ids`` (see the module docstring):
            ``labels[b, i] == ids[b, i]`` on response tokens, :data:`IGNORE_INDEX` elsewhere
            (prompt and padding). Every row needs a target among ``labels[:, 1:]``.
        attention_mask: optional ``(b, t)``, ``True``/1 = real token; needed for left
            padding (right padding changes no real token's logits in a causal model).
            Padding must not be a target.
    Returns:
        ``(b,)`` sums of log-probabilities (each <= 0), differentiable: float32 (float64
        for a float64 model; half-precision logits are converted to float32 first).
    """
    if not isinstance(model, nn.Module) and not callable(model):
        raise TypeError(f"model must be callable as model(ids), got {type(model).__name__}")
    ids, labels = _check_int("ids", ids), _check_int("labels", labels)
    if labels.shape != ids.shape:
        raise ValueError(
            f"labels must have the shape of ids {tuple(ids.shape)}, got {tuple(labels.shape)}"
        )
    if ids.shape[1] < 2:
        raise ValueError(
            f"ids need at least 2 tokens per row (a context and a target), got {ids.shape[1]}"
        )
    target = labels != IGNORE_INDEX
    if bool((target & (labels != ids)).any()):
        raise ValueError(
            "labels must be aligned with ids: labels[b, i] == ids[b, i] on response tokens "
            "and -100 elsewhere (are they shifted already? sequence_logprobs shifts)"
        )
    mask = None
    if attention_mask is not None:
        if not isinstance(attention_mask, torch.Tensor) or attention_mask.shape != ids.shape:
            raise ValueError(f"attention_mask must be a tensor of shape {tuple(ids.shape)}")
        mask = attention_mask.to(ids.device) != 0
        if bool((target & ~mask).any()):
            raise ValueError("padding (attention_mask 0) must not be a target (labels -100)")
    empty = ~target[:, 1:].any(dim=1)
    if bool(empty.any()):
        rows = empty.nonzero().flatten().tolist()
        raise ValueError(f"every row needs a response token among labels[:, 1:]; rows {rows}")
    logits = _logits(model, ids[:, :-1], None if mask is None else mask[:, :-1])
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()  # log-probabilities summed over a reply need float32
    y = labels[:, 1:].to(logits.device)
    keep = y != IGNORE_INDEX
    picked = logits.gather(-1, y.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # (b, t-1)
    token_logps = picked - torch.logsumexp(logits, dim=-1)
    return (token_logps * keep).sum(dim=1)


# ---------------------------------------------------------------------------- the loss


def _check_logps(**tensors: Any) -> torch.Size:
    shape = None
    for name, x in tensors.items():
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if not x.dtype.is_floating_point:
            raise TypeError(f"{name} must be a float tensor, got dtype {x.dtype}")
        if x.dim() != 1 or x.numel() == 0:
            raise ValueError(f"{name} must have shape (b,) with b >= 1, got {tuple(x.shape)}")
        if shape is None:
            shape = x.shape
        elif x.shape != shape:
            raise ValueError(
                f"the four log-probability tensors must have one shape; {name} "
                f"has {tuple(x.shape)}, expected {tuple(shape)}"
            )
    assert shape is not None
    return shape


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
    loss_type: str = "sigmoid",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The DPO loss of a batch of pairs, and each response's implicit reward.

    Args:
        policy_chosen_logps, policy_rejected_logps: ``(b,)`` :math:`\\log\\pi_\\theta(y|x)`
            of the chosen and the rejected responses (from :func:`sequence_logprobs`).
        ref_chosen_logps, ref_rejected_logps: ``(b,)`` the same under the frozen reference.
        beta: :math:`\\beta > 0`, the strength of the KL constraint (small: the policy may
            move far from the reference).
        label_smoothing: cDPO's :math:`\\varepsilon` in ``[0, 0.5)``; ``"sigmoid"`` only.
        loss_type: ``"sigmoid"`` (DPO, cDPO) or ``"ipo"`` (see the module docstring).
    Returns:
        ``(loss, chosen_rewards, rejected_rewards)``: the mean loss over the pairs (a scalar
        with gradients) and ``(b,)`` rewards :math:`\\beta(\\log\\pi - \\log\\pi_\\text{ref})`,
        detached.
    """
    _check_logps(
        policy_chosen_logps=policy_chosen_logps,
        policy_rejected_logps=policy_rejected_logps,
        ref_chosen_logps=ref_chosen_logps,
        ref_rejected_logps=ref_rejected_logps,
    )
    beta = validate.positive("beta", beta)
    label_smoothing = validate.number("label_smoothing", label_smoothing, low=0.0)
    if label_smoothing >= 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
    validate.one_of("loss_type", loss_type, LOSS_TYPES)
    if loss_type == "ipo" and label_smoothing:
        raise ValueError("label_smoothing is cDPO's and applies to loss_type='sigmoid' only")
    chosen_ratio = policy_chosen_logps - ref_chosen_logps  # log pi/pi_ref of y_w
    rejected_ratio = policy_rejected_logps - ref_rejected_logps
    h = chosen_ratio - rejected_ratio
    if loss_type == "sigmoid":
        logsig = torch.nn.functional.logsigmoid
        losses = -(1 - label_smoothing) * logsig(beta * h) - label_smoothing * logsig(-beta * h)
    else:
        losses = (h - 1 / (2 * beta)) ** 2
    return losses.mean(), beta * chosen_ratio.detach(), beta * rejected_ratio.detach()


def preference_metrics(
    chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor
) -> dict[str, float]:
    """The reward metrics of a batch of pairs (those trl's DPO trainer logs).

    Args:
        chosen_rewards, rejected_rewards: ``(b,)`` implicit rewards (from :func:`dpo_loss`).
    Returns:
        ``{"rewards/chosen", "rewards/rejected"}`` (means), ``"rewards/accuracy"`` (share of
        pairs whose chosen reward is higher, a tie counting one half, as chapter 10's
        :func:`llmkit.reward.pairwise_accuracy`; so 0.5 before training, where the policy is
        the reference and every reward is 0. ``trl`` counts only strict wins, 0 there) and
        ``"rewards/margin"`` (mean of chosen - rejected).
    """
    _check_logps(chosen_rewards=chosen_rewards, rejected_rewards=rejected_rewards)
    c, r = chosen_rewards.detach().double(), rejected_rewards.detach().double()
    return {
        "rewards/chosen": float(c.mean()),
        "rewards/rejected": float(r.mean()),
        "rewards/accuracy": float(pair_outcomes(c, r).double().mean()),
        "rewards/margin": float((c - r).mean()),
    }


# ------------------------------------------------------------------------------ data


@dataclass(frozen=True)
class PreferencePair:
    """One preference pair: the same prompt with the chosen and the rejected response.

    Attributes:
        chosen, rejected: :class:`~llmkit.sft.SFTExample` whose labels mark the response
            only (the final assistant message and the end of its turn).
    """

    chosen: SFTExample
    rejected: SFTExample

    def __post_init__(self) -> None:
        for name in ("chosen", "rejected"):
            ex = getattr(self, name)
            if not isinstance(ex, SFTExample):
                raise TypeError(f"{name} must be an SFTExample, got {type(ex).__name__}")
            if ex.n_targets == 0:
                raise ValueError(f"{name} has no response token among labels[1:]")


def _final_turn_only(ex: SFTExample) -> tuple[list[int], int]:
    """Labels of the last run of targets only (the final assistant message), and where it
    starts: earlier assistant turns of a multi-turn prompt are context in DPO."""
    labels = list(ex.labels)
    end = len(labels)
    while end > 0 and labels[end - 1] == IGNORE_INDEX:
        end -= 1
    start = end
    while start > 0 and labels[start - 1] != IGNORE_INDEX:
        start -= 1
    return [IGNORE_INDEX] * start + labels[start:], start


def encode_preference(
    prompt: Sequence[Mapping[str, Any]] | str,
    chosen: str,
    rejected: str,
    tokenizer: Any,
    template: str = "notes",
    max_length: int | None = None,
    truncation: str = "right",
    *,
    default_system: str | None = CHATML_DEFAULT_SYSTEM,
) -> PreferencePair:
    """Encode one preference pair: two conversations that differ in the final reply.

    Each sequence is ``prompt + [{"role": "assistant", "content": reply}]`` encoded by
    :func:`llmkit.sft.encode_conversation` (same template rules, same tokens), then only the
    final reply's targets are kept: the content, its closing markup and the end-of-turn
    token; the prompt, earlier assistant turns included, is context (-100).

    Args:
        prompt: the conversation so far (a list of messages ending with the user's), or one
            user message as a string.
        chosen, rejected: the two replies.
        tokenizer, template, default_system: as in :func:`llmkit.sft.encode_conversation`.
        max_length: the most ids per sequence (at least 2), ``None`` = no limit.
        truncation: ``"right"`` (cut the end of the reply; at least one reply token must
            stay) or ``"error"``.
    Returns:
        a :class:`PreferencePair`.
    """
    validate.one_of("template", template, TEMPLATES)
    validate.one_of("truncation", truncation, ("right", "error"))
    if max_length is not None:
        validate.integer("max_length", max_length, minimum=2)
    if isinstance(prompt, str):
        prompt = [{"role": "user", "content": prompt}]
    if isinstance(prompt, Mapping) or not isinstance(prompt, Sequence) or not prompt:
        raise TypeError("prompt must be a non-empty list of messages or a str")
    if prompt[-1].get("role") == "assistant":
        raise ValueError("prompt must not end with an assistant message (the replies do)")
    out = []
    for name, reply in (("chosen", chosen), ("rejected", rejected)):
        if not isinstance(reply, str):
            raise TypeError(f"{name} must be a str, got {type(reply).__name__}")
        messages = [*prompt, {"role": "assistant", "content": reply}]
        full = encode_conversation(messages, tokenizer, template, default_system=default_system)
        labels, start = _final_turn_only(full)
        ids, cut = full.ids, 0
        if max_length is not None and len(ids) > max_length:
            if truncation == "error" or start + 1 >= max_length:
                raise ValueError(
                    f"the {name} sequence has {len(ids)} tokens, more than max_length="
                    f"{max_length}"
                    + ("" if truncation == "error" else f", and its prompt alone has {start}")
                )
            cut = len(ids) - max_length
            ids, labels = ids[:max_length], labels[:max_length]
        out.append(SFTExample(list(ids), labels, cut))
    return PreferencePair(out[0], out[1])


def encode_preferences(
    examples: Sequence[Mapping[str, Any]],
    tokenizer: Any,
    template: str = "notes",
    max_length: int | None = None,
    truncation: str = "drop",
    *,
    default_system: str | None = CHATML_DEFAULT_SYSTEM,
) -> list[PreferencePair]:
    """:func:`encode_preference` over ``[{"prompt", "chosen", "rejected"}, ...]``.

    ``truncation="drop"`` (the default) leaves out every pair with a sequence longer than
    ``max_length``, so that no reply is cut (compare the lengths to count them); ``"right"``
    and ``"error"`` as in :func:`encode_preference`.
    """
    validate.one_of("truncation", truncation, ("right", "drop", "error"))
    if isinstance(examples, Mapping) or not isinstance(examples, Sequence):
        raise TypeError("examples must be a list of {'prompt', 'chosen', 'rejected'} dicts")
    out = []
    for k, e in enumerate(examples):
        if not isinstance(e, Mapping) or not {"prompt", "chosen", "rejected"} <= set(e):
            raise ValueError(f"examples[{k}] must have 'prompt', 'chosen' and 'rejected'")
        pair = encode_preference(
            e["prompt"],
            e["chosen"],
            e["rejected"],
            tokenizer,
            template,
            None if truncation == "drop" else max_length,
            "right" if truncation == "drop" else truncation,
            default_system=default_system,
        )
        if truncation == "drop" and max_length is not None:
            if max(len(pair.chosen), len(pair.rejected)) > max_length:
                continue
        out.append(pair)
    return out


def _check_pairs(name: str, pairs: Any) -> list[PreferencePair]:
    if isinstance(pairs, PreferencePair) or not isinstance(pairs, Sequence):
        raise TypeError(f"{name} must be a list of PreferencePair, got {type(pairs).__name__}")
    if not pairs:
        raise ValueError(f"{name} must hold at least one pair")
    for k, p in enumerate(pairs):
        if not isinstance(p, PreferencePair):
            raise TypeError(f"{name}[{k}] must be a PreferencePair, got {type(p).__name__}")
    return list(pairs)


def pad_pairs(pairs: Sequence[PreferencePair], pad_id: int) -> dict[str, torch.Tensor]:
    """Stack ``b`` pairs into one batch of ``2b`` sequences, padded on the right.

    Rows ``0 .. b-1`` are the chosen sequences, rows ``b .. 2b-1`` the rejected ones, so one
    forward pass scores both (as trl's ``concatenated_forward``).

    Returns:
        ``{"ids", "labels", "attention_mask"}``, each ``(2b, T)`` (``T`` the longest
        sequence), unshifted: ``ids`` padded with ``pad_id``, ``labels`` with -100,
        ``attention_mask`` int64, 1 on real tokens.
    """
    pairs = _check_pairs("pairs", pairs)
    validate.integer("pad_id", pad_id, minimum=0)
    seqs = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    labels = torch.full((len(seqs), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, s in enumerate(seqs):
        n = len(s)
        ids[r, :n] = torch.tensor(s.ids, dtype=torch.long)
        labels[r, :n] = torch.tensor(s.labels, dtype=torch.long)
        mask[r, :n] = 1
    return {"ids": ids, "labels": labels, "attention_mask": mask}


def _device(model: nn.Module) -> torch.device:
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


@torch.no_grad()
def pair_logprobs(
    model: nn.Module,
    pairs: Sequence[PreferencePair],
    pad_id: int,
    batch_size: int = 16,
    *,
    use_mask: bool = True,
) -> torch.Tensor:
    """``log pi(y|x)`` of every pair's two responses, in eval mode, without gradients.

    Args:
        model: as in :func:`sequence_logprobs`; run on the device of its parameters, put
            back in the mode it was in.
        pairs: :class:`PreferencePair` list.
        pad_id: the padding id (:func:`pad_pairs`).
        batch_size: pairs per forward pass.
        use_mask: pass the attention mask to the model (set ``False`` for a model whose
            forward takes no ``attention_mask``; right padding makes it unnecessary).
    Returns:
        ``(n, 2)`` float32 on the CPU: column 0 chosen, column 1 rejected.
    """
    pairs = _check_pairs("pairs", pairs)
    validate.positive_int("batch_size", batch_size)
    device = _device(model)
    was_training = model.training
    model.eval()
    out = []
    try:
        for i in range(0, len(pairs), batch_size):
            batch = pad_pairs(pairs[i : i + batch_size], pad_id)
            b = batch["ids"].shape[0] // 2
            logps = sequence_logprobs(
                model,
                batch["ids"].to(device),
                batch["labels"].to(device),
                batch["attention_mask"].to(device) if use_mask else None,
            ).cpu()
            out.append(torch.stack([logps[:b], logps[b:]], dim=1))
    finally:
        model.train(was_training)
    return torch.cat(out)


def reference_logprobs(
    reference: nn.Module, pairs: Sequence[PreferencePair], pad_id: int, batch_size: int = 16
) -> torch.Tensor:
    """The frozen reference's ``(n, 2)`` log-probabilities of every pair, computed once
    (:func:`pair_logprobs`): DPO needs them at every step, never with gradients."""
    return pair_logprobs(reference, pairs, pad_id, batch_size)


def _check_ref(name: str, ref: Any, n: int) -> torch.Tensor:
    if not isinstance(ref, torch.Tensor) or not ref.dtype.is_floating_point:
        raise TypeError(f"{name} must be a float tensor of shape ({n}, 2)")
    if tuple(ref.shape) != (n, 2):
        raise ValueError(f"{name} must have shape ({n}, 2), got {tuple(ref.shape)}")
    return ref.detach().float().cpu()


def dpo_batch_fn(
    train_pairs: Sequence[PreferencePair],
    val_pairs: Sequence[PreferencePair],
    batch_size: int,
    pad_id: int,
    reference: nn.Module | Mapping[str, torch.Tensor],
    *,
    ref_batch_size: int = 16,
) -> Callable[[str, torch.Generator | None], dict[str, torch.Tensor]]:
    """A ``get_batch(split, generator)`` for :func:`llmkit.train.train` over preference pairs.

    The reference's log-probabilities are computed here, once per pair (or taken as given),
    and travel with each batch: training never runs the reference model.

    Args:
        train_pairs, val_pairs: :class:`PreferencePair` lists.
        batch_size: pairs per batch (at most the pairs of each split).
        pad_id: the padding id.
        reference: the frozen reference model (usually a copy of the policy before
            training), or its precomputed ``{"train": (n, 2), "val": (m, 2)}``
            (:func:`reference_logprobs`).
        ref_batch_size: pairs per forward pass of the reference.
    Returns:
        ``get_batch(split, generator) -> batch``: :func:`pad_pairs`'s dict of ``(2B, T)``
        tensors plus ``"ref_logps"`` ``(2B,)`` (chosen rows first). ``batch_size`` distinct
        pairs drawn with ``torch.randperm(n, generator=generator)``; a ``"val"`` call without
        a generator uses one seeded with 0.
    """
    validate.positive_int("batch_size", batch_size)
    validate.integer("pad_id", pad_id, minimum=0)
    splits = {
        "train": _check_pairs("train_pairs", train_pairs),
        "val": _check_pairs("val_pairs", val_pairs),
    }
    for name, pairs in splits.items():
        if batch_size > len(pairs):
            raise ValueError(
                f"batch_size={batch_size} is more than the {len(pairs)} pairs of {name!r}"
            )
    if isinstance(reference, nn.Module):
        refs = {
            k: reference_logprobs(reference, v, pad_id, ref_batch_size) for k, v in splits.items()
        }
    elif isinstance(reference, Mapping):
        refs = {
            k: _check_ref(f"reference[{k!r}]", reference.get(k), len(v)) for k, v in splits.items()
        }
    else:
        raise TypeError("reference must be an nn.Module or {'train': ..., 'val': ...} tensors")

    def get_batch(split: str, generator: torch.Generator | None = None) -> dict:
        validate.one_of("split", split, ("train", "val"))
        if generator is None and split == "val":
            generator = torch.Generator().manual_seed(0)
        pick = torch.randperm(len(splits[split]), generator=generator)[:batch_size]
        batch = pad_pairs([splits[split][int(i)] for i in pick], pad_id)
        ref = refs[split][pick]
        batch["ref_logps"] = torch.cat([ref[:, 0], ref[:, 1]])
        return batch

    return get_batch


def dpo_loss_fn(
    beta: float = 0.1,
    label_smoothing: float = 0.0,
    loss_type: str = "sigmoid",
    *,
    use_mask: bool = True,
) -> Callable[[nn.Module, Mapping[str, torch.Tensor]], torch.Tensor]:
    """A ``loss_fn(model, batch)`` for :func:`llmkit.train.train` on :func:`dpo_batch_fn`'s
    batches: one forward pass over the ``2B`` sequences, then :func:`dpo_loss`.

    Args:
        beta, label_smoothing, loss_type: as in :func:`dpo_loss` (checked here, once).
        use_mask: pass the batch's attention mask to the model.
    """
    dpo_loss(*[torch.zeros(1)] * 4, beta, label_smoothing, loss_type)  # validates

    def loss_fn(model: nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        logps = sequence_logprobs(
            model, batch["ids"], batch["labels"], batch["attention_mask"] if use_mask else None
        )
        ref = batch["ref_logps"].to(logps.device)
        b = logps.shape[0] // 2
        loss, _, _ = dpo_loss(
            logps[:b], logps[b:], ref[:b], ref[b:], beta, label_smoothing, loss_type
        )
        return loss

    return loss_fn


def evaluate_pairs(
    model: nn.Module,
    pairs: Sequence[PreferencePair],
    pad_id: int,
    ref_logps: torch.Tensor,
    beta: float = 0.1,
    batch_size: int = 16,
    *,
    label_smoothing: float = 0.0,
    loss_type: str = "sigmoid",
) -> dict[str, float]:
    """The DPO loss and :func:`preference_metrics` of ``model`` on ``pairs``.

    Args:
        model: the policy (evaluated without gradients, see :func:`pair_logprobs`).
        pairs, pad_id, batch_size: as in :func:`pair_logprobs`.
        ref_logps: ``(n, 2)`` the reference's (:func:`reference_logprobs`).
        beta, label_smoothing, loss_type: as in :func:`dpo_loss`.
    Returns:
        ``{"loss", "rewards/chosen", "rewards/rejected", "rewards/accuracy",
        "rewards/margin", "logps/chosen", "logps/rejected"}``: means over the pairs (the
        ``logps`` are the policy's mean sequence log-probabilities, whose fall on the chosen
        responses is a known failure of DPO).
    """
    pairs = _check_pairs("pairs", pairs)
    ref = _check_ref("ref_logps", ref_logps, len(pairs))
    pol = pair_logprobs(model, pairs, pad_id, batch_size)
    loss, rc, rr = dpo_loss(
        pol[:, 0], pol[:, 1], ref[:, 0], ref[:, 1], beta, label_smoothing, loss_type
    )
    out = {"loss": float(loss), **preference_metrics(rc, rr)}
    out["logps/chosen"] = float(pol[:, 0].mean())
    out["logps/rejected"] = float(pol[:, 1].mean())
    return out


# ------------------------------------------- DPO of a pretrained Llama on hh-rlhf (top blocks)


def last_exchange(pair: Any) -> dict[str, str] | None:
    """An hh-rlhf pair (:class:`llmkit.reward.PreferencePair`) cut to its last exchange.

    Returns:
        ``{"prompt", "chosen", "rejected"}``: the last human message before the two answers
        and the two final answers (stripped), or ``None`` when the pair is not one that
        differs in its last answer only, has no human turn before it, or has an empty or
        identical answer.
    """
    from llmkit import reward

    if not isinstance(pair, reward.PreferencePair):
        raise TypeError(f"pair must be a llmkit.reward.PreferencePair, got {type(pair).__name__}")
    if not pair.differs_in_last_answer:
        return None
    turns = reward.split_turns(pair.prefix)
    if not turns or not turns[-1].startswith(reward.TURN_MARKERS[0]):
        return None
    prompt = turns[-1][len(reward.TURN_MARKERS[0]) :].strip()
    chosen = pair.chosen[len(reward.TURN_MARKERS[1]) :].strip()
    rejected = pair.rejected[len(reward.TURN_MARKERS[1]) :].strip()
    if not prompt or not chosen or not rejected or chosen == rejected:
        return None
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


class TopBlocks(nn.Module):
    """The last blocks of a :class:`~llmkit.llama.Llama`, its final norm and its output head,
    run on the hidden states that the frozen blocks below them computed once.

    Training only the top of a model costs a fraction of a full step, and when the lower
    blocks are frozen their outputs are the same for the policy and the reference: computed
    once per sequence (:meth:`trunk`), they are reused at every step.

    Args:
        model: the Llama (its modules are shared, not copied: training this trains it).
        n_frozen: how many blocks from the bottom stay frozen, ``0 .. n_layer - 1``.
    """

    def __init__(self, model: nn.Module, n_frozen: int) -> None:
        super().__init__()
        from llmkit.llama import Llama

        if not isinstance(model, Llama):
            raise TypeError(f"model must be a llmkit.llama.Llama, got {type(model).__name__}")
        n_layer = len(model.blocks)
        validate.integer("n_frozen", n_frozen, minimum=0)
        if n_frozen >= n_layer:
            raise ValueError(f"n_frozen must be in 0 .. {n_layer - 1}, got {n_frozen}")
        self.n_frozen = n_frozen
        self.blocks = nn.ModuleList(list(model.blocks)[n_frozen:])
        self.norm_f = model.norm_f
        self._model = [model]  # not a submodule: the embedding and the head stay frozen

    @property
    def model(self) -> nn.Module:
        """The whole Llama these blocks belong to."""
        return self._model[0]

    def _angles(self, t: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        from llmkit.nn import rope_angles

        positions = torch.arange(t, device=device)
        return rope_angles(positions, self.model.rope_frequencies(device))

    @torch.no_grad()
    def trunk(self, ids: torch.Tensor) -> torch.Tensor:
        """``ids (b, t)`` (right-padded) -> the frozen blocks' output ``(b, t, d_model)``."""
        ids = _check_int("ids", ids)
        cos, sin = self._angles(ids.shape[1], ids.device)
        x = self.model.wte(ids)
        for block in list(self.model.blocks)[: self.n_frozen]:
            x, _ = block(x, cos, sin)
        return x

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """``hidden (b, t, d_model)`` from :meth:`trunk` -> the final hidden states
        ``(b, t, d_model)`` (after ``norm_f``; apply :meth:`logits` to the rows needed)."""
        cos, sin = self._angles(hidden.shape[1], hidden.device)
        x = hidden
        for block in self.blocks:
            x, _ = block(x, cos, sin)
        return self.norm_f(x)

    def logits(self, states: torch.Tensor) -> torch.Tensor:
        """``(..., d_model)`` final hidden states -> ``(..., vocab)`` logits (the frozen head)."""
        return self.model.lm_head(states)


def states_logprobs(top: TopBlocks, hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """:func:`sequence_logprobs` of the whole Llama, computed from the trunk's states.

    The output head runs on the response positions only (the prompt's logits are never
    needed), which saves most of its cost.

    Args:
        top: the :class:`TopBlocks`.
        hidden: ``(b, t, d_model)`` :meth:`TopBlocks.trunk` of the right-padded ``ids``.
        labels: ``(b, t)`` aligned with those ids (see the module docstring).
    Returns:
        ``(b,)`` sums of the response tokens' log-probabilities.
    """
    labels = _check_int("labels", labels)
    if hidden.dim() != 3 or hidden.shape[:2] != labels.shape:
        raise ValueError(
            f"hidden must have shape (b, t, d) with (b, t) = {tuple(labels.shape)}, "
            f"got {tuple(hidden.shape)}"
        )
    states = top(hidden[:, :-1])  # (b, t-1, d): position i predicts token i + 1
    y = labels[:, 1:].to(states.device)
    keep = y != IGNORE_INDEX
    rows = keep.nonzero()[:, 0]
    logits = top.logits(states[keep]).float()  # (n_targets, V)
    target = y[keep]
    token_logps = logits.gather(-1, target.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(
        logits, dim=-1
    )
    out = torch.zeros(labels.shape[0], dtype=token_logps.dtype, device=states.device)
    return out.index_add(0, rows, token_logps)


def _pad_states(
    states: Sequence[torch.Tensor], labels: Sequence[Sequence[int]]
) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(s.shape[0] for s in states)
    hidden = states[0].new_zeros((len(states), width, states[0].shape[1]))
    lab = torch.full((len(states), width), IGNORE_INDEX, dtype=torch.long)
    for r, (s, y) in enumerate(zip(states, labels, strict=True)):
        hidden[r, : s.shape[0]] = s
        lab[r, : len(y)] = torch.tensor(list(y), dtype=torch.long)
    return hidden, lab


@dataclass
class CachedPairs:
    """Preference pairs with their trunk states and their reference log-probabilities.

    Attributes:
        states: per pair, ``(chosen (t_w, d), rejected (t_l, d))`` trunk outputs.
        labels: per pair, ``(chosen labels, rejected labels)`` (aligned, as in
            :class:`PreferencePair`).
        ref_logps: ``(n, 2)`` the reference's log-probabilities (chosen, rejected).
    """

    states: list[tuple[torch.Tensor, torch.Tensor]]
    labels: list[tuple[list[int], list[int]]]
    ref_logps: torch.Tensor

    def __len__(self) -> int:
        return len(self.states)

    def batch(self, index: Sequence[int]) -> dict[str, torch.Tensor]:
        """Pairs ``index`` as ``{"hidden" (2B, T, d), "labels" (2B, T), "ref_logps" (2B,)}``,
        chosen rows first (as :func:`pad_pairs`)."""
        index = [int(i) for i in index]
        states = [self.states[i][0] for i in index] + [self.states[i][1] for i in index]
        labels = [self.labels[i][0] for i in index] + [self.labels[i][1] for i in index]
        hidden, lab = _pad_states(states, labels)
        ref = self.ref_logps[index]
        return {"hidden": hidden, "labels": lab, "ref_logps": torch.cat([ref[:, 0], ref[:, 1]])}


def _length_order(lengths: Sequence[int]) -> list[int]:
    """Indices sorted by length (stable): :func:`cache_pairs` and :func:`evaluate_cached`
    batch pairs in this order, so that both pass the same padded batches (and an untrained
    top reproduces the reference's log-probabilities exactly)."""
    return sorted(range(len(lengths)), key=lambda i: lengths[i])


@torch.no_grad()
def cache_pairs(
    top: TopBlocks, pairs: Sequence[PreferencePair], batch_size: int = 8
) -> CachedPairs:
    """Run the frozen trunk once over every pair, and the (still untrained) top to get the
    reference's log-probabilities: the only full forward passes DPO needs here.

    Args:
        top: the :class:`TopBlocks` before training (then it *is* the reference).
        pairs: :class:`PreferencePair` list.
        batch_size: pairs per forward pass.
    """
    pairs = _check_pairs("pairs", pairs)
    validate.positive_int("batch_size", batch_size)
    device = _device(top.model)
    was_training = top.training
    top.eval()
    # pairs of similar lengths share a forward pass, so little of it is spent on padding;
    # the results are stored back in the order of ``pairs``
    order = _length_order([max(len(p.chosen), len(p.rejected)) for p in pairs])
    states: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(pairs)
    ref = torch.zeros(len(pairs), 2)
    try:
        for i in range(0, len(pairs), batch_size):
            index = order[i : i + batch_size]
            chunk = [pairs[j] for j in index]
            batch = pad_pairs(chunk, pad_id=0)
            hidden = top.trunk(batch["ids"].to(device))
            logps = states_logprobs(top, hidden, batch["labels"].to(device)).cpu()
            b = len(chunk)
            ref[index] = torch.stack([logps[:b], logps[b:]], dim=1)
            for k, (j, p) in enumerate(zip(index, chunk, strict=True)):
                states[j] = (
                    hidden[k, : len(p.chosen)].cpu().clone(),
                    hidden[b + k, : len(p.rejected)].cpu().clone(),
                )
    finally:
        top.train(was_training)
    labels = [(list(p.chosen.labels), list(p.rejected.labels)) for p in pairs]
    return CachedPairs([s for s in states if s is not None], labels, ref)


def cached_batch_fn(
    train_pairs: CachedPairs, val_pairs: CachedPairs, batch_size: int
) -> Callable[[str, torch.Generator | None], dict[str, torch.Tensor]]:
    """A ``get_batch(split, generator)`` for :func:`llmkit.train.train` over
    :class:`CachedPairs`: ``batch_size`` distinct pairs, :meth:`CachedPairs.batch`'s dict."""
    validate.positive_int("batch_size", batch_size)
    splits = {"train": train_pairs, "val": val_pairs}
    for name, pairs in splits.items():
        if not isinstance(pairs, CachedPairs):
            raise TypeError(f"{name}_pairs must be CachedPairs, got {type(pairs).__name__}")
        if batch_size > len(pairs):
            raise ValueError(f"batch_size={batch_size} is more than the {len(pairs)} {name} pairs")

    def get_batch(split: str, generator: torch.Generator | None = None) -> dict:
        validate.one_of("split", split, ("train", "val"))
        if generator is None and split == "val":
            generator = torch.Generator().manual_seed(0)
        pick = torch.randperm(len(splits[split]), generator=generator)[:batch_size]
        return splits[split].batch(pick.tolist())

    return get_batch


def cached_dpo_loss_fn(
    beta: float = 0.1, label_smoothing: float = 0.0, loss_type: str = "sigmoid"
) -> Callable[[nn.Module, Mapping[str, torch.Tensor]], torch.Tensor]:
    """:func:`dpo_loss_fn` for :class:`TopBlocks` on :func:`cached_batch_fn`'s batches."""
    dpo_loss(*[torch.zeros(1)] * 4, beta, label_smoothing, loss_type)  # validates

    def loss_fn(top: nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        if not isinstance(top, TopBlocks):
            raise TypeError(f"the model must be TopBlocks, got {type(top).__name__}")
        logps = states_logprobs(top, batch["hidden"], batch["labels"])
        ref = batch["ref_logps"].to(logps.device)
        b = logps.shape[0] // 2
        loss, _, _ = dpo_loss(
            logps[:b], logps[b:], ref[:b], ref[b:], beta, label_smoothing, loss_type
        )
        return loss

    return loss_fn


@torch.no_grad()
def evaluate_cached(
    top: TopBlocks, pairs: CachedPairs, beta: float = 0.1, batch_size: int = 8
) -> dict[str, float]:
    """:func:`evaluate_pairs` for :class:`TopBlocks` on :class:`CachedPairs` (same keys)."""
    if not isinstance(pairs, CachedPairs):
        raise TypeError(f"pairs must be CachedPairs, got {type(pairs).__name__}")
    validate.positive_int("batch_size", batch_size)
    device = _device(top.model)
    was_training = top.training
    top.eval()
    order = _length_order([max(len(c), len(r)) for c, r in pairs.labels])
    pol = torch.zeros(len(pairs), 2)
    try:
        for i in range(0, len(pairs), batch_size):
            index = order[i : i + batch_size]
            batch = pairs.batch(index)
            logps = states_logprobs(top, batch["hidden"].to(device), batch["labels"]).cpu()
            b = logps.shape[0] // 2
            pol[index] = torch.stack([logps[:b], logps[b:]], dim=1)
    finally:
        top.train(was_training)
    ref = pairs.ref_logps
    loss, rc, rr = dpo_loss(pol[:, 0], pol[:, 1], ref[:, 0], ref[:, 1], beta)
    metrics = {"loss": float(loss), **preference_metrics(rc, rr)}
    metrics["logps/chosen"] = float(pol[:, 0].mean())
    metrics["logps/rejected"] = float(pol[:, 1].mean())
    return metrics


#: The sizes of :func:`hh_dpo` per profile.
HH_DPO_RECIPES: dict[str, dict[str, Any]] = {
    "smoke": dict(
        subset="helpful-base", n_train=8, n_val=8, max_tokens=96, n_frozen=28, steps=4,
        batch_size=2, lr=1e-5, beta=0.1, eval_every=2, seed=0,
    ),
    "book": dict(
        subset="helpful-base", n_train=160, n_val=64, max_tokens=256, n_frozen=26, steps=80,
        batch_size=4, lr=3e-5, beta=0.1, eval_every=20, seed=0,
    ),
    "full": dict(
        subset="helpful-base", n_train=2000, n_val=200, max_tokens=256, n_frozen=0,
        steps=1000, batch_size=8, lr=5e-6, beta=0.1, eval_every=100, seed=0,
    ),
}  # fmt: skip

_HH_DPO_FORMAT = 1


def hh_dpo_recipe(profile: str | None = None) -> dict[str, Any]:
    """:data:`HH_DPO_RECIPES` of ``profile`` (``None``: the current profile)."""
    from llmkit import cache

    return dict(HH_DPO_RECIPES[cache.profile_name(profile)])


def hh_preferences(
    tokenizer: Any, subset: str, split: str, n: int, max_tokens: int
) -> tuple[list[PreferencePair], list[dict[str, str]]]:
    """The first ``n`` hh-rlhf pairs of ``split`` cut to their last exchange
    (:func:`last_exchange`), in SmolLM2's chat template with its default system prompt,
    leaving out every pair with a sequence over ``max_tokens`` tokens (none is cut).

    Returns:
        ``(encoded pairs, their {"prompt", "chosen", "rejected"} texts)``, in file order.
    """
    from llmkit import reward

    validate.one_of("split", split, ("train", "test"))
    validate.positive_int("n", n)
    validate.integer("max_tokens", max_tokens, minimum=2)
    encoded, texts = [], []
    for pair in reward.load_pairs(subset)[split]:
        ex = last_exchange(pair)
        if ex is None:
            continue
        enc = encode_preferences([ex], tokenizer, "chatml", max_tokens, "drop")
        if enc:
            encoded.append(enc[0])
            texts.append(ex)
        if len(encoded) == n:
            break
    if len(encoded) < n:
        raise ValueError(f"only {len(encoded)} {split} pairs fit max_tokens={max_tokens}")
    return encoded, texts


def hh_dpo(
    profile: str | None = None,
    *,
    cache_dir: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """DPO of SmolLM2-135M-Instruct (:func:`llmkit.pretrained.smollm2`) on hh-rlhf pairs,
    trained once and cached (a JSON record, and the trained blocks' weights).

    The pairs are the last exchange of helpful-base pairs (:func:`hh_preferences`): train
    pairs from the course's train split, held-out pairs from its test split
    (:func:`llmkit.reward.load_pairs`). Only the top ``30 - n_frozen`` blocks and the final
    norm are trained (:class:`TopBlocks`; the embedding, tied to the output head, stays
    frozen); the trunk below runs once per sequence (:func:`cache_pairs`), which also gives
    the reference's log-probabilities. Training is :func:`llmkit.train.train` with AdamW
    (no weight decay), ``lr`` warmed up over a tenth of the steps then cosine-decayed, the
    DPO loss (:func:`cached_dpo_loss_fn`), and the held-out metrics
    (:func:`evaluate_cached`) every ``eval_every`` steps.

    Args:
        profile: ``"smoke"``, ``"book"`` or ``"full"`` (:data:`HH_DPO_RECIPES`); ``None``:
            the current profile.
        cache_dir: the cache root (default ``$LLMKIT_CACHE`` or ``~/.cache/llmkit``).
        progress: print what it does.
    Returns:
        the record: ``recipe``; ``n_trainable`` parameters; ``before`` and ``after``
        (:func:`evaluate_cached` on the held-out pairs; ``before`` is the reference, whose
        implicit rewards are 0); ``ref_logp_accuracy`` (how often the reference alone gives
        the chosen answer the higher log-probability); ``history`` (``steps``,
        ``train_loss``, and per evaluation ``eval_steps`` and each metric as a list);
        ``mean_tokens`` per sequence; ``cache_seconds`` (trunk and reference),
        ``train_seconds``, ``load_average`` (1-minute, at the start and the end of
        training), ``hardware``; ``path`` (the cache entry, not stored).
    """
    import os
    import tempfile
    import time
    from pathlib import Path

    from llmkit import cache, pretrained, train

    name = cache.profile_name(profile)
    recipe = hh_dpo_recipe(name)
    digest = cache.fingerprint({"format": _HH_DPO_FORMAT, **recipe})
    final = cache.entry_path("hh_dpo", name, digest, cache_dir)

    def load(path: Path) -> dict[str, Any]:
        import json

        record = json.loads((path / "record.json").read_text())
        if not (path / "top_blocks.pt").exists():
            raise FileNotFoundError("top_blocks.pt")
        record["path"] = str(path)
        return record

    def train_now() -> dict[str, Any]:
        r = recipe
        cache.log(progress, f"DPO of SmolLM2-135M-Instruct on hh-rlhf ({name} profile)")
        model, tokenizer, _ = pretrained.smollm2()
        for p in model.parameters():
            p.requires_grad_(False)
        top = TopBlocks(model, r["n_frozen"])
        for p in top.parameters():
            p.requires_grad_(True)
        train_pairs, _ = hh_preferences(
            tokenizer, r["subset"], "train", r["n_train"], r["max_tokens"]
        )
        val_pairs, _ = hh_preferences(tokenizer, r["subset"], "test", r["n_val"], r["max_tokens"])
        start = time.perf_counter()
        train_cached = cache_pairs(top, train_pairs)
        val_cached = cache_pairs(top, val_pairs)
        cache_seconds = time.perf_counter() - start
        lengths = [len(s) for p in train_pairs + val_pairs for s in (p.chosen, p.rejected)]
        cache.log(
            progress,
            f"trunk and reference over {len(lengths)} sequences "
            f"({sum(lengths) / len(lengths):.0f} tokens each): {cache_seconds:.0f} s",
        )
        before = evaluate_cached(top, val_cached, r["beta"])
        ref = val_cached.ref_logps
        history: dict[str, list] = {"eval_steps": [0], **{k: [v] for k, v in before.items()}}

        def callback(step: int, _: Any) -> None:
            if step % r["eval_every"] == 0 or step == r["steps"]:
                m = evaluate_cached(top, val_cached, r["beta"])
                history["eval_steps"].append(step)
                for k, v in m.items():
                    history[k].append(v)
                cache.log(
                    progress,
                    f"step {step:4d}: held-out accuracy {m['rewards/accuracy']:.3f}, "
                    f"margin {m['rewards/margin']:+.3f}, chosen log p {m['logps/chosen']:.1f}",
                )

        config = train.TrainConfig(
            max_steps=r["steps"], lr=r["lr"], warmup_steps=max(1, r["steps"] // 10),
            weight_decay=0.0, eval_interval=0, seed=r["seed"], progress=False,
            device=str(_device(model)), log_interval=1,
        )  # fmt: skip
        load_start = os.getloadavg()[0]
        start = time.perf_counter()
        hist = train.train(
            top,
            config,
            cached_batch_fn(train_cached, val_cached, r["batch_size"]),
            cached_dpo_loss_fn(r["beta"]),
            callback=callback,
        )
        train_seconds = time.perf_counter() - start
        after = {k: history[k][-1] for k in before}
        record = {
            "recipe": recipe,
            "n_trainable": sum(p.numel() for p in top.parameters()),
            "before": before,
            "after": after,
            "ref_logp_accuracy": float((ref[:, 0] > ref[:, 1]).double().mean()),
            "history": {"steps": list(hist.steps), "train_loss": list(hist.train_loss)} | history,
            "mean_tokens": sum(lengths) / len(lengths),
            "cache_seconds": cache_seconds,
            "train_seconds": train_seconds,
            "load_average": [load_start, os.getloadavg()[0]],
            "hardware": cache.describe_hardware(str(_device(model))),
        }
        final.parent.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=final.name + ".", dir=final.parent))
        torch.save({k: v.cpu() for k, v in top.state_dict().items()}, partial / "top_blocks.pt")
        cache.write_json(partial / "record.json", record)
        cache.publish(partial, final)
        cache.log(progress, f"cached in {cache.show_path(final)}")
        return load(final)

    return cache.load_or_train(final, load, train_now, "DPO run")


# ------------------------------------- chapter 11's sentiment task: DPO's reward-KL frontier

#: :func:`sentiment_dpo`'s sizes per profile: ``n_prompts`` training prompts (the first of
#: :func:`llmkit.pretrained.review_prompts`'s validation split, as PPO's), two samples of
#: the reference each; ``steps`` DPO steps of ``batch_size`` pairs at learning rate ``lr``.
#: Sampling (``max_new_tokens``, temperature 1) and the held-out prompts and their seed are
#: :func:`llmkit.rl.sentiment_ppo`'s, so that both methods are measured the same way.
SENTIMENT_DPO_RECIPES: dict[str, dict[str, Any]] = {
    "smoke": dict(n_prompts=16, steps=4, batch_size=4, lr=1e-4, seed=0),
    "book": dict(n_prompts=512, steps=120, batch_size=32, lr=1e-4, seed=0),
    "full": dict(n_prompts=2048, steps=500, batch_size=64, lr=5e-5, seed=0),
}

_SENTIMENT_DPO_FORMAT = 1


def sentiment_pairs(
    reference: nn.Module,
    prompts: Sequence[Sequence[int]],
    score: Callable[[list[list[int]], list[list[int]]], torch.Tensor],
    config: Any,
    generator: torch.Generator,
) -> tuple[list[PreferencePair], dict[str, float]]:
    """Preference pairs labelled by a reward: two samples of ``reference`` per prompt, the
    one with the higher score chosen (ties left out), as in the DPO paper's IMDb task.

    Args:
        reference: the model to sample from (a GPT or Llama).
        prompts: lists of token ids.
        score: ``(prompts, responses) -> (b,)`` scores (the reward).
        config: the :class:`llmkit.rl.PPOConfig` whose sampling settings are used.
        generator: for sampling.
    Returns:
        ``(pairs, stats)``: :class:`PreferencePair` list (labels on the response tokens) and
        ``{"pairs", "ties", "mean_score", "mean_gap"}`` (the gap: chosen - rejected score).
    """
    from llmkit import rl

    sampler = rl.PolicyWithValue(reference)
    pairs: list[PreferencePair] = []
    cfg = rl.PPOConfig(**{**config.to_dict(), "batch_size": len(prompts), "flip": ()})
    a = rl.rollout(sampler, reference, prompts, score, cfg, generator)
    b = rl.rollout(sampler, reference, prompts, score, cfg, generator)
    ties, gaps = 0, []
    for k, p in enumerate(a.prompts):
        sa, sb = float(a.scores[k]), float(b.scores[k])
        if sa == sb:
            ties += 1
            continue
        win, lose = a.responses[k], b.responses[k]
        if sb > sa:
            win, lose = lose, win
        pairs.append(
            PreferencePair(
                SFTExample(list(p) + list(win), [IGNORE_INDEX] * len(p) + list(win)),
                SFTExample(list(p) + list(lose), [IGNORE_INDEX] * len(p) + list(lose)),
            )
        )
        gaps.append(abs(sa - sb))
    stats = {
        "pairs": float(len(pairs)),
        "ties": float(ties),
        "mean_score": float(torch.cat([a.scores, b.scores]).mean()),
        "mean_gap": float(sum(gaps) / max(1, len(gaps))),
    }
    return pairs, stats


def reward_and_kl(
    policy: nn.Module,
    reference: nn.Module,
    prompts: Sequence[Sequence[int]],
    score: Callable[[list[list[int]], list[list[int]]], torch.Tensor],
    config: Any,
    seed: int,
) -> dict[str, float]:
    """One sample of ``policy`` per prompt: its mean reward and its mean sequence KL to the
    reference, :math:`\\sum_t \\log\\pi(y_t|\\cdot) - \\log\\pi_\\text{ref}(y_t|\\cdot)` over the
    response's tokens (the measurement of :func:`llmkit.rl.sentiment_ppo`'s evaluation).

    Returns:
        ``{"score", "kl", "positive", "n"}`` (``positive``: share of scores > 0).
    """
    from llmkit import rl

    cfg = rl.PPOConfig(**{**config.to_dict(), "batch_size": len(prompts), "flip": ()})
    g = torch.Generator().manual_seed(seed)
    batch = rl.rollout(rl.PolicyWithValue(policy), reference, prompts, score, cfg, g)
    m = batch.response_mask
    seq_kl = ((batch.logprobs - batch.ref_logprobs) * m).sum(1)
    return {
        "score": float(batch.scores.mean()),
        "kl": float(seq_kl.mean()),
        "positive": float((batch.scores > 0).float().mean()),
        "n": float(len(prompts)),
    }


def sentiment_dpo(
    beta: float = 0.1,
    profile: str | None = None,
    *,
    cache_dir: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """DPO on chapter 11's sentiment task, trained once per ``beta`` and cached (JSON).

    The policy and the reference start as :func:`llmkit.pretrained.review_gpt`; the reward
    is :func:`llmkit.pretrained.sentiment_reward`. Pairs: :func:`sentiment_pairs` on the
    recipe's training prompts; training: :func:`llmkit.train.train` with the DPO loss
    (:func:`dpo_batch_fn`, the reference's log-probabilities computed once), AdamW without
    weight decay; evaluation: :func:`reward_and_kl` on :func:`llmkit.rl.sentiment_ppo`'s
    held-out prompts with its seed, before and after.

    Args:
        beta: DPO's :math:`\\beta > 0`.
        profile: ``"smoke"``, ``"book"`` or ``"full"`` (:data:`SENTIMENT_DPO_RECIPES`);
            ``None``: the current profile.
        cache_dir, progress: as in :func:`hh_dpo`.
    Returns:
        ``{"beta", "recipe", "pairs" (stats), "before", "after", "train_loss",
        "train_seconds", "load_average", "path"}``.
    """
    import os
    import time
    from pathlib import Path

    from llmkit import cache, pretrained, rl, train

    beta = validate.positive("beta", beta)
    name = cache.profile_name(profile)
    recipe = dict(SENTIMENT_DPO_RECIPES[name])
    ppo_recipe = rl.sentiment_ppo_recipe(name)
    upstream = [
        pretrained.review_gpt_dir(name, cache_dir=cache_dir).name,
        pretrained.sentiment_reward_dir(name, cache_dir=cache_dir).name,
    ]
    payload = {"format": _SENTIMENT_DPO_FORMAT, "beta": beta, **recipe, "upstream": upstream}
    payload["sampling"] = {"max_new_tokens": ppo_recipe["ppo"]["max_new_tokens"]}
    payload["eval"] = ppo_recipe["eval"]
    final = cache.entry_path("sentiment_dpo", name, cache.fingerprint(payload), cache_dir, ".json")

    def load(path: Path) -> dict[str, Any]:
        import json

        record = json.loads(path.read_text())
        record["path"] = str(path)
        return record

    def train_now() -> dict[str, Any]:
        model, tokenizer, _ = pretrained.review_gpt(name, cache_dir=cache_dir, progress=progress)
        model.cpu()
        reward = pretrained.sentiment_reward(name, cache_dir=cache_dir, progress=progress)
        eot = tokenizer.special_tokens["<|endoftext|>"]
        config = rl.PPOConfig(
            batch_size=1,
            minibatch_size=1,
            max_new_tokens=ppo_recipe["ppo"]["max_new_tokens"],
            eos_token_id=eot,
            pad_id=eot,
        )

        def score(p: list[list[int]], r: list[list[int]]) -> torch.Tensor:
            out = []
            for prompt, resp in zip(p, r, strict=True):
                resp = list(resp)
                if eot in resp:
                    resp = resp[: resp.index(eot)]
                out.append(tokenizer.decode([t for t in prompt if t != eot] + resp))
            return reward(out)

        import copy

        ref = copy.deepcopy(model).eval()
        for p in ref.parameters():
            p.requires_grad_(False)
        prompts = pretrained.review_prompts(tokenizer, "validation", n=recipe["n_prompts"])
        held_out = pretrained.review_prompts(
            tokenizer, ppo_recipe["eval"]["split"], n=ppo_recipe["eval"]["n"]
        )
        g = torch.Generator().manual_seed(recipe["seed"])
        pairs, stats = sentiment_pairs(ref, prompts, score, config, g)
        before = reward_and_kl(model, ref, held_out, score, config, ppo_recipe["eval"]["seed"])
        cache.log(
            progress,
            f"DPO beta {beta:g}: {len(pairs)} pairs; before: score {before['score']:+.3f}",
        )
        get_batch = dpo_batch_fn(pairs, pairs[: recipe["batch_size"]], recipe["batch_size"],
                                 eot, ref)  # fmt: skip
        tc = train.TrainConfig(
            max_steps=recipe["steps"], lr=recipe["lr"], warmup_steps=max(1, recipe["steps"] // 10),
            weight_decay=0.0, eval_interval=0, seed=recipe["seed"], progress=False,
            device="cpu", log_interval=1,
        )  # fmt: skip
        load_start = os.getloadavg()[0]
        start = time.perf_counter()
        hist = train.train(model, tc, get_batch, dpo_loss_fn(beta))
        seconds = time.perf_counter() - start
        after = reward_and_kl(model, ref, held_out, score, config, ppo_recipe["eval"]["seed"])
        cache.log(
            progress,
            f"DPO beta {beta:g}: after {recipe['steps']} steps ({seconds:.0f} s): score "
            f"{after['score']:+.3f}, KL {after['kl']:.2f} nats",
        )
        record = {
            "beta": beta,
            "recipe": recipe,
            "pairs": stats,
            "before": before,
            "after": after,
            "train_loss": list(hist.train_loss),
            "train_seconds": seconds,
            "load_average": [load_start, os.getloadavg()[0]],
        }
        cache.write_json(final, record)
        return load(final)

    return cache.load_or_train(final, load, train_now, "DPO run")

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
response's is higher (accuracy) and the mean margin (trl logs the same four numbers,
the last two as ``rewards/accuracies`` and ``rewards/margins``).

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
        pairs whose chosen reward is strictly higher) and ``"rewards/margin"`` (mean of
        chosen - rejected).
    """
    _check_logps(chosen_rewards=chosen_rewards, rejected_rewards=rejected_rewards)
    c, r = chosen_rewards.detach().double(), rejected_rewards.detach().double()
    return {
        "rewards/chosen": float(c.mean()),
        "rewards/rejected": float(r.mean()),
        "rewards/accuracy": float((c > r).double().mean()),
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

"""Reference answers and known slips for lab 03 (GPT). See the package docstring.

Each slip computes the wrong answer that one known mistake gives, from the same
arguments as the reference (for ``train_loop``: from the check's case).
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F

from llmkit.gpt import GPT, GPTConfig
from llmkit.nn import attention, causal_mask
from llmkit.train import TrainConfig, train

# ------------------------------------------------------------------------- lm_loss


def lm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The loss of :meth:`llmkit.gpt.GPT.loss`: mean cross-entropy, targets -100 ignored."""
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)


def _nll(logits: torch.Tensor, targets: torch.Tensor, dim: int = -1):
    keep = targets != -100
    picked = logits.log_softmax(dim).gather(-1, targets.masked_fill(~keep, 0).unsqueeze(-1))
    return -picked.squeeze(-1) * keep, keep


def lm_loss_mean_over_all(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Divides by every position, the ignored ones included."""
    nll, _ = _nll(logits, targets)
    return nll.sum() / targets.numel()


def lm_loss_sum(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The sum of the per-position losses, not their mean."""
    nll, _ = _nll(logits, targets)
    return nll.sum()


def lm_loss_shifted(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Shifts the (already aligned) targets once more: logits[:, :-1] against targets[:, 1:]."""
    if logits.shape[1] < 2 or not bool((targets[:, 1:] != -100).any()):
        raise ValueError("no shifted positions")
    return lm_loss(logits[:, :-1], targets[:, 1:])


def lm_loss_wrong_dim(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log_softmax over the positions (dim 1) instead of the vocabulary."""
    nll, keep = _nll(logits, targets, dim=1)
    return nll.sum() / keep.sum()


# --------------------------------------------------------------------- gpt_forward


def _config(params: dict[str, torch.Tensor], n_head: int) -> GPTConfig:
    vocab_size, d_model = params["wte.weight"].shape
    return GPTConfig(
        vocab_size=int(vocab_size),
        block_size=int(params["wpe.weight"].shape[0]),
        n_layer=len({k.split(".")[1] for k in params if k.startswith("blocks.")}),
        n_head=n_head,
        d_model=int(d_model),
    )


@torch.no_grad()
def gpt_forward(params: dict[str, torch.Tensor], ids: torch.Tensor, n_head: int) -> torch.Tensor:
    """llmkit's GPT loaded with ``params``, run on ``ids``."""
    with torch.random.fork_rng(devices=[]):
        model = GPT(_config(params, n_head)).to(params["wte.weight"].dtype).eval()
    model.load_state_dict(params)
    return model(ids)


def _forward(
    params, ids, n_head, *, causal=True, positions=True, gelu="tanh", scale=True, pre_ln=True
):
    """GPT's forward pass written out; the keywords switch on the known slips."""

    def linear(x, name):
        return x @ params[f"{name}.weight"].T + params[f"{name}.bias"]

    def ln(x, name):
        return F.layer_norm(
            x, x.shape[-1:], params[f"{name}.weight"], params[f"{name}.bias"], eps=1e-5
        )

    b, t = ids.shape
    x = params["wte.weight"][ids] + (params["wpe.weight"][:t] if positions else 0)
    d = x.shape[-1]
    hd = d // n_head
    allowed = torch.ones(t, t, dtype=torch.bool).tril()
    for i in range(_config(params, n_head).n_layer):
        p = f"blocks.{i}"
        h = ln(x, f"{p}.ln_1") if pre_ln else x
        q, k, v = (
            z.reshape(b, t, n_head, hd).transpose(1, 2)
            for z in linear(h, f"{p}.attn.qkv").split(d, dim=-1)
        )
        scores = q @ k.transpose(-2, -1) / (math.sqrt(hd) if scale else 1.0)
        if causal:
            scores = scores.masked_fill(~allowed, float("-inf"))
        a = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, t, d)
        x = x + linear(a, f"{p}.attn.proj")
        if not pre_ln:
            x = ln(x, f"{p}.ln_1")
        h = ln(x, f"{p}.ln_2") if pre_ln else x
        x = x + linear(F.gelu(linear(h, f"{p}.mlp.fc"), approximate=gelu), f"{p}.mlp.proj")
        if not pre_ln:
            x = ln(x, f"{p}.ln_2")
    return ln(x, "ln_f") @ params["wte.weight"].T


def gpt_forward_no_mask(params, ids, n_head):
    return _forward(params, ids, n_head, causal=False)


def gpt_forward_no_positions(params, ids, n_head):
    return _forward(params, ids, n_head, positions=False)


def gpt_forward_exact_gelu(params, ids, n_head):
    return _forward(params, ids, n_head, gelu="none")


def gpt_forward_no_scale(params, ids, n_head):
    return _forward(params, ids, n_head, scale=False)


def gpt_forward_post_ln(params, ids, n_head):
    return _forward(params, ids, n_head, pre_ln=False)


# --------------------------------------------------------------- attend_with_cache


def attend_with_cache(q, k, v, cache):
    """Append ``(k, v)`` to the layer's cache and attend over every cached position."""
    if cache is not None:
        k = torch.cat([cache[0], k], dim=-2)
        v = torch.cat([cache[1], v], dim=-2)
    mask = causal_mask(q.shape[-2], k.shape[-2])  # the new queries are the last positions
    return attention(q, k, v, mask=mask), (k, v)


def attend_top_left_mask(q, k, v, cache):
    """The causal mask aligned top-left (tril of a (m, s + m) matrix): wrong once cached."""
    if cache is None:
        raise ValueError("the same as the reference without a cache")
    k_all, v_all = torch.cat([cache[0], k], dim=-2), torch.cat([cache[1], v], dim=-2)
    mask = torch.ones(q.shape[-2], k_all.shape[-2], dtype=torch.bool).tril()
    return attention(q, k_all, v_all, mask=mask), (k_all, v_all)


def attend_no_mask(q, k, v, cache):
    """No causal mask: right for one new query, wrong for a prompt or a chunk."""
    if cache is not None:
        k = torch.cat([cache[0], k], dim=-2)
        v = torch.cat([cache[1], v], dim=-2)
    return attention(q, k, v), (k, v)


def attend_ignoring_cache(q, k, v, cache):
    """Attends over the new positions only and keeps only them."""
    mask = causal_mask(q.shape[-2])
    return attention(q, k, v, mask=mask), (k, v)


# ------------------------------------------------------------- generate_with_cache


@torch.no_grad()
def generate_with_cache(model: GPT, ids: torch.Tensor, n: int) -> torch.Tensor:
    """Greedy decoding by full recomputation (no cache): the answer the cache must give."""
    for _ in range(n):
        nxt = model(ids)[:, -1].argmax(dim=-1, keepdim=True)
        ids = torch.cat([ids, nxt], dim=1)
    return ids


@torch.no_grad()
def _cached(model: GPT, ids: torch.Tensor, n: int, *, restart_positions: bool) -> torch.Tensor:
    c = model.config
    cache: list = [None] * c.n_layer
    out, new, start = ids, ids, 0
    for _ in range(n):
        b, m = new.shape
        x = model.wte.weight[new] + model.wpe.weight[(0 if restart_positions else start) :][:m]
        for i, block in enumerate(model.blocks):
            q, k, v = (
                z.reshape(b, m, c.n_head, -1).transpose(1, 2)
                for z in block.attn.qkv(block.ln_1(x)).split(c.d_model, dim=-1)
            )
            a, cache[i] = attend_with_cache(q, k, v, cache[i])
            x = x + block.attn.proj(a.transpose(1, 2).reshape(b, m, c.d_model))
            x = x + block.mlp(block.ln_2(x))
        new = model.lm_head(model.ln_f(x[:, -1])).argmax(dim=-1, keepdim=True)
        start += m
        out = torch.cat([out, new], dim=1)
    return out


def generate_positions_restart(model: GPT, ids: torch.Tensor, n: int) -> torch.Tensor:
    """The cache is right, but each fed token gets positions from 0 again (wpe[0])."""
    return _cached(model, ids, n, restart_positions=True)


# ---------------------------------------------------------------------- train_loop


def _llmkit_losses(model, batches, steps, lr, warmup_steps, max_grad_norm) -> list[float]:
    config = TrainConfig(
        max_steps=steps,
        lr=lr,
        warmup_steps=warmup_steps,
        grad_clip=max_grad_norm,
        eval_interval=0,
        log_interval=1,
        device="cpu",
        dtype="float32",
        progress=False,
    )
    it = iter(batches)
    with torch.random.fork_rng(devices=[]):
        return train(model, config, lambda split, generator: next(it)).train_loss


def train_loop(*args, **kwargs) -> list[float]:
    """The per-step losses of llmkit.train on the same model and batches.

    Called with the check's case (``reference_takes="case"``), it starts from the case's
    untouched copy of the arguments (the student trains the given model in place);
    otherwise with the exercise's own arguments.
    """
    if len(args) == 1 and not kwargs and hasattr(args[0], "pristine"):
        kwargs, args = copy.deepcopy(args[0].pristine), ()
    return _llmkit_losses(*args, **kwargs)


def _loop(case, *, warmup=True, clip_before_step=True, offset=0, decay_all=False):
    kw = copy.deepcopy(case.pristine)
    model, steps, lr = kw["model"], kw["steps"], kw["lr"]
    warmup_steps = kw["warmup_steps"] if warmup else 0
    params = list(model.parameters())
    groups = [
        {"params": [p for p in params if p.dim() >= 2 or decay_all], "weight_decay": 0.1},
        {"params": [p for p in params if p.dim() < 2 and not decay_all], "weight_decay": 0.0},
    ]
    opt = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), eps=1e-8)
    model.train()
    losses = []
    with torch.random.fork_rng(devices=[]):
        for step in range(steps):
            x, y = kw["batches"][step]
            loss = lm_loss(model(x), y)
            opt.zero_grad()
            loss.backward()
            if clip_before_step:
                torch.nn.utils.clip_grad_norm_(params, kw["max_grad_norm"])
            s = step + offset
            if s < warmup_steps:
                rate = lr * (s + 1) / (warmup_steps + 1)
            else:
                r = (s - warmup_steps) / (steps - warmup_steps)
                rate = lr / 10 + 0.5 * (1 + math.cos(math.pi * r)) * (lr - lr / 10)
            for group in opt.param_groups:
                group["lr"] = rate
            opt.step()
            losses.append(loss.item())
    return losses


def train_loop_no_warmup(case):
    return _loop(case, warmup=False)


def train_loop_clip_after_step(case):
    return _loop(case, clip_before_step=False)


def train_loop_schedule_one_ahead(case):
    return _loop(case, offset=1)


def train_loop_decay_everything(case):
    return _loop(case, decay_all=True)


# -------------------------------------------------------------- gpt_num_parameters


def gpt_num_parameters(vocab_size, block_size, n_layer, d_model, tied=True) -> int:
    """GPT.num_parameters() of such a model (built on the meta device), plus the output
    projection when it is not tied."""
    with torch.device("meta"):
        model = GPT(
            GPTConfig(
                vocab_size=vocab_size,
                block_size=block_size,
                n_layer=n_layer,
                n_head=1,
                d_model=d_model,
            )
        )
    return model.num_parameters() + (0 if tied else vocab_size * d_model)


def _count(V, T, L, D, tied, *, positions=True, biases=True, norms=True) -> int:
    per_block = 12 * D * D + (9 * D if biases else 0) + (4 * D if norms else 0)
    total = V * D + (T * D if positions else 0) + L * per_block + (2 * D if norms else 0)
    return total + (0 if tied else V * D)


def num_parameters_tie_swapped(V, T, L, D, tied=True) -> int:
    """The output projection counted when tied and left out when not."""
    return _count(V, T, L, D, not tied)


def num_parameters_no_positions(V, T, L, D, tied=True) -> int:
    return _count(V, T, L, D, tied, positions=False)


def num_parameters_no_biases(V, T, L, D, tied=True) -> int:
    return _count(V, T, L, D, tied, biases=False)


def num_parameters_no_norms(V, T, L, D, tied=True) -> int:
    return _count(V, T, L, D, tied, norms=False)

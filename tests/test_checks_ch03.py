"""Lab 03's checks: what the generic tests (tests/test_checks.py) cannot see.

Each catalogued slip fails and names its hint; the chapter's torch functions are off
limits; the spy of generate_with_cache (metered weights) cannot be got round; the checks
can run twice on the same fixed cases (their models carry meters or are trained).
"""

from __future__ import annotations

import functools
import math

import pytest
import torch
import torch.nn.functional as F

from llmkit.course.checks import ch03
from llmkit.course.checks.runner import CheckFailed
from llmkit.gpt import GPT, GPTConfig
from llmkit.train import TrainConfig, train

# ------------------------------------------------------------------ correct answers
# with switches for the catalogued slips


def lm_loss(logits, targets, *, over_all=False, total=False, shift=False, dim=-1):
    if shift:
        logits, targets = logits[:, :-1], targets[:, 1:]
    keep = targets != -100
    picked = logits.log_softmax(dim).gather(-1, targets.masked_fill(~keep, 0).unsqueeze(-1))
    nll = -picked.squeeze(-1) * keep
    return nll.sum() if total else nll.sum() / (targets.numel() if over_all else keep.sum())


def gpt_forward(params, ids, n_head, *, mask=True, pos=True, gelu="tanh", scale=True,
                post_ln=False, sdpa=False):  # fmt: skip
    def linear(x, name):
        return x @ params[f"{name}.weight"].T + params[f"{name}.bias"]

    def ln(x, name):
        w, b = params[f"{name}.weight"], params[f"{name}.bias"]
        return F.layer_norm(x, x.shape[-1:], w, b, eps=1e-5)

    b, t = ids.shape
    x = params["wte.weight"][ids] + (params["wpe.weight"][:t] if pos else 0)
    d = x.shape[-1]
    for i in range(len({k.split(".")[1] for k in params if k.startswith("blocks.")})):
        p = f"blocks.{i}"
        h = x if post_ln else ln(x, f"{p}.ln_1")
        q, k, v = (z.view(b, t, n_head, -1).transpose(1, 2)
                   for z in linear(h, f"{p}.attn.qkv").split(d, -1))  # fmt: skip
        if sdpa:
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            s = q @ k.transpose(-2, -1) / (math.sqrt(d // n_head) if scale else 1)
            if mask:
                s = s.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), -math.inf)
            a = s.softmax(-1) @ v
        x = x + linear(a.transpose(1, 2).reshape(b, t, d), f"{p}.attn.proj")
        x = ln(x, f"{p}.ln_1") if post_ln else x
        h = x if post_ln else ln(x, f"{p}.ln_2")
        x = x + linear(F.gelu(linear(h, f"{p}.mlp.fc"), approximate=gelu), f"{p}.mlp.proj")
        x = ln(x, f"{p}.ln_2") if post_ln else x
    return ln(x, "ln_f") @ params["wte.weight"].T


def attend_with_cache(q, k, v, cache, *, top_left=False, mask=True, use_cache=True, sdpa=False):
    if cache is not None and use_cache:
        k, v = torch.cat([cache[0], k], -2), torch.cat([cache[1], v], -2)
    m, s = q.shape[-2], k.shape[-2]
    allowed = torch.ones(m, s, dtype=torch.bool).tril(0 if top_left else s - m)
    if sdpa:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed), (k, v)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if mask:
        scores = scores.masked_fill(~allowed, -math.inf)
    return scores.softmax(-1) @ v, (k, v)


def _block_step(block, x, c, cache_i):
    b, m, _ = x.shape
    q, k, v = (z.view(b, m, c.n_head, -1).transpose(1, 2)
               for z in block.attn.qkv(block.ln_1(x)).split(c.d_model, -1))  # fmt: skip
    a, cache_i = attend_with_cache(q, k, v, cache_i)
    x = x + block.attn.proj(a.transpose(1, 2).reshape(b, m, c.d_model))
    return x + block.mlp(block.ln_2(x)), cache_i


def generate_with_cache(model, ids, n, *, restart_positions=False, recompute=False):
    c = model.config
    cache, out, new, start = [None] * c.n_layer, ids, ids, 0
    for _ in range(n):
        if recompute:  # no cache kept: the whole sequence each step
            cache, new, start = [None] * c.n_layer, out, 0
        m = new.shape[1]
        first = 0 if restart_positions else start
        x = model.wte(new) + model.wpe.weight[first : first + m]
        for i, block in enumerate(model.blocks):
            x, cache[i] = _block_step(block, x, c, cache[i])
        new = model.lm_head(model.ln_f(x[:, -1])).argmax(-1, keepdim=True)
        out, start = torch.cat([out, new], 1), start + m
    return out


def train_loop(model, batches, steps, lr, warmup_steps, max_grad_norm, *, warm=True,
               clip_after=False, ahead=0, decay_all=False, scheduler=False):  # fmt: skip
    params = list(model.parameters())
    decay = [p for p in params if p.dim() >= 2 or decay_all]
    rest = [p for p in params if p.dim() < 2 and not decay_all]
    groups = [{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), eps=1e-8)
    w = warmup_steps if warm else 0
    if scheduler:  # off limits
        torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    losses = []
    for step in range(steps):
        x, y = batches[step]
        loss = lm_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        if not clip_after:
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        s = step + ahead
        r = (s - w) / (steps - w)
        rate = (
            lr * (s + 1) / (w + 1) if s < w else lr / 10 * (1 + 4.5 * (1 + math.cos(math.pi * r)))
        )
        for g in opt.param_groups:
            g["lr"] = rate
        opt.step()
        if clip_after:
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        losses.append(loss.item())
    return losses


def gpt_num_parameters(V, T, L, D, tied=True, *, swap=False, pos=True, biases=True, norms=True):
    block = 12 * D * D + (9 * D if biases else 0) + (4 * D if norms else 0)
    total = V * D + (T * D if pos else 0) + L * block + (2 * D if norms else 0)
    return total + (0 if tied != swap else V * D)


# ------------------------------------------------------------------------- helpers

EXERCISES = {
    "lm_loss": (ch03.LM_LOSS, lm_loss),
    "gpt_forward": (ch03.GPT_FORWARD, gpt_forward),
    "attend_with_cache": (ch03.ATTEND_WITH_CACHE, attend_with_cache),
    "generate_with_cache": (ch03.GENERATE_WITH_CACHE, generate_with_cache),
    "train_loop": (ch03.TRAIN_LOOP, train_loop),
    "gpt_num_parameters": (ch03.GPT_NUM_PARAMETERS, gpt_num_parameters),
}


def fails(name, fn, *, cases=None) -> str:
    exercise = EXERCISES[name][0]
    with pytest.raises(CheckFailed) as info:
        exercise.check(fn, cases=cases or len(exercise.fixed) + 2, seed=0)
    return str(info.value)


def test_correct_answers_pass_twice(capsys):
    for exercise, fn in EXERCISES.values():
        for _ in range(2):  # fixed cases are fresh each time (meters, trained models)
            exercise.check(fn, cases=len(exercise.fixed) + 1, seed=1)
    assert capsys.readouterr().out.count("✔") == 2 * len(EXERCISES)


SLIPS = {  # the switches of the answers above, in the order of each catalogue
    "lm_loss": [dict(over_all=True), dict(total=True), dict(shift=True), dict(dim=1)],
    "gpt_forward": [dict(mask=False), dict(pos=False), dict(gelu="none"), dict(scale=False),
                    dict(post_ln=True)],
    "attend_with_cache": [dict(top_left=True), dict(mask=False), dict(use_cache=False)],
    "generate_with_cache": [dict(restart_positions=True)],
    "train_loop": [dict(warm=False), dict(clip_after=True), dict(ahead=1), dict(decay_all=True)],
    "gpt_num_parameters": [dict(swap=True), dict(pos=False), dict(biases=False),
                           dict(norms=False)],
}  # fmt: skip


@pytest.mark.parametrize("name, i", [(n, i) for n, s in SLIPS.items() for i in range(len(s))])
def test_each_slip_fails_and_is_named(name, i):
    exercise, fn = EXERCISES[name]
    assert len(SLIPS[name]) == len(exercise.slips)
    slip = functools.partial(fn, **SLIPS[name][i])
    assert f"hint: {exercise.slips[i].hint}" in fails(name, slip)


def _llmkit_train(model, batches, steps, lr, warmup_steps, max_grad_norm):
    it = iter(batches)
    config = TrainConfig(max_steps=steps, lr=lr, warmup_steps=warmup_steps, progress=False)
    return train(model, config, lambda split, g: next(it)).train_loss


def _llmkit_gpt(params, ids, n_head):
    V, d = params["wte.weight"].shape
    model = GPT(GPTConfig(V, params["wpe.weight"].shape[0], 1, n_head, d)).double()
    model.load_state_dict(params, strict=False)
    return model(ids)


@pytest.mark.parametrize(
    "name, fn, what",
    [  # the chapter's torch functions, and what the lab's last cells import
        ("lm_loss", lambda lo, t: F.cross_entropy(lo.flatten(0, 1), t.flatten()), "torch"),
        ("lm_loss", lambda lo, t: F.nll_loss(lo.log_softmax(-1).flatten(0, 1), t.flatten()), ""),
        ("lm_loss", lambda lo, t: torch.nn.CrossEntropyLoss()(lo.flatten(0, 1), t.flatten()), ""),
        ("gpt_forward", functools.partial(gpt_forward, sdpa=True), "torch"),
        ("attend_with_cache", functools.partial(attend_with_cache, sdpa=True), "torch"),
        ("train_loop", functools.partial(train_loop, scheduler=True), "torch.optim"),
        ("gpt_forward", _llmkit_gpt, "llmkit.gpt"),
        ("train_loop", _llmkit_train, "llmkit.train"),
        (
            "gpt_num_parameters",
            lambda *a: GPT(GPTConfig(*a[:3], 1, a[3])).num_parameters(),
            "llmkit.gpt",
        ),
    ],
)
def test_off_limits(name, fn, what):
    assert f"must be written without {what}" in fails(name, fn)


def _forward_each_step(model, ids, n, strip=False):  # the exercise-2 answer, every step
    params = model.state_dict()
    if strip:  # copied out of the weights' metered type
        params = {k: v.as_subclass(torch.Tensor) for k, v in params.items()}
    for _ in range(n):
        logits = gpt_forward(params, ids, model.config.n_head)
        ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], 1)
    return ids


def _class_level_forward(model, ids, n):
    for _ in range(n):
        ids = torch.cat([ids, type(model).forward(model, ids)[:, -1:].argmax(-1)], 1)
    return ids


@pytest.mark.parametrize(
    "fn, problem",
    [
        (functools.partial(generate_with_cache, recompute=True), "the sequence was recomputed"),
        (_forward_each_step, "the sequence was recomputed"),
        (functools.partial(_forward_each_step, strip=True), "fewer than"),
        (_class_level_forward, "must be written without llmkit.gpt.GPT"),
        (lambda model, ids, n: model.generate(ids, n), "must be written without llmkit.lm"),
        (lambda m, ids, n: m.forward_with_cache(ids)[0], "must be written without llmkit.lm"),
    ],
)
def test_the_cache_spy_cannot_be_got_round(fn, problem):
    assert problem in fails("generate_with_cache", fn)

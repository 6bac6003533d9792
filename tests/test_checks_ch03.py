"""The chapter-03 lab checks pass on correct answers and fail, with the right hint, on
subtly wrong ones."""

from __future__ import annotations

import functools
import math

import pytest
import torch
import torch.nn.functional as F

from llmkit.course.checks import ch03

# ------------------------------------------------------------------ correct answers


def lm_loss(logits, targets):
    log_probs = logits.log_softmax(dim=-1)
    keep = targets != -100
    safe = targets.masked_fill(~keep, 0)
    nll = -log_probs.gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    return (nll * keep).sum() / keep.sum()


def lm_loss_library_style(logits, targets):
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)


def gpt_forward(
    params,
    ids,
    n_head,
    *,
    causal=True,
    pos=True,
    gelu="tanh",
    scale=True,
    final_ln=True,
    sdpa=False,
):
    def linear(x, name):
        return x @ params[f"{name}.weight"].T + params[f"{name}.bias"]

    def ln(x, name):
        return F.layer_norm(
            x, x.shape[-1:], params[f"{name}.weight"], params[f"{name}.bias"], eps=1e-5
        )

    b, t = ids.shape
    x = params["wte.weight"][ids] + (params["wpe.weight"][:t] if pos else 0)
    d = x.shape[-1]
    hd = d // n_head
    n_layer = len({k.split(".")[1] for k in params if k.startswith("blocks.")})
    future = torch.ones(t, t, dtype=torch.bool).triu(1)
    for i in range(n_layer):
        p = f"blocks.{i}"
        q, k, v = linear(ln(x, f"{p}.ln_1"), f"{p}.attn.qkv").split(d, dim=-1)
        q, k, v = (z.view(b, t, n_head, hd).transpose(1, 2) for z in (q, k, v))
        if sdpa:
            a = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        else:
            s = q @ k.transpose(-2, -1)
            if scale:
                s = s / math.sqrt(hd)
            if causal:
                s = s.masked_fill(future, float("-inf"))
            a = s.softmax(-1) @ v
        x = x + linear(a.transpose(1, 2).reshape(b, t, d), f"{p}.attn.proj")
        x = x + linear(
            F.gelu(linear(ln(x, f"{p}.ln_2"), f"{p}.mlp.fc"), approximate=gelu), f"{p}.mlp.proj"
        )
    if final_ln:
        x = ln(x, "ln_f")
    return x @ params["wte.weight"].T


def generate_with_cache(model, ids, n):
    logits, cache = model.forward_with_cache(ids, model.new_cache())
    out = ids
    for step in range(n):
        nxt = logits[:, -1].argmax(-1, keepdim=True)
        out = torch.cat([out, nxt], 1)
        if step < n - 1:
            logits, cache = model.forward_with_cache(nxt, cache)
    return out


def generate_feeding_the_last_token_too(model, ids, n):
    cache = model.new_cache()
    out, new = ids, ids
    for _ in range(n):
        logits, cache = model.forward_with_cache(new, cache)
        new = logits[:, -1].argmax(-1, keepdim=True)
        out = torch.cat([out, new], 1)
    return out


def gpt_num_parameters(vocab_size, block_size, n_layer, d_model, tied=True):
    d = d_model
    block = 12 * d * d + 13 * d
    total = vocab_size * d + block_size * d + n_layer * block + 2 * d
    return total if tied else total + vocab_size * d


# ------------------------------------------------------------------ passing


@pytest.mark.parametrize("seed", [None, 0, 1])
def test_checks_pass_on_correct_answers(seed, capsys):
    ch03.check_lm_loss(lm_loss, seed=seed)
    ch03.check_lm_loss(lm_loss_library_style, seed=seed)
    ch03.check_gpt_forward(gpt_forward, seed=seed)
    ch03.check_gpt_forward(functools.partial(gpt_forward, sdpa=True), seed=seed)
    ch03.check_generate_with_cache(generate_with_cache, seed=seed)
    ch03.check_generate_with_cache(generate_feeding_the_last_token_too, seed=seed)
    ch03.check_num_parameters(gpt_num_parameters, seed=seed)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 7 and all(line.startswith("✔ ") for line in lines)
    assert lines[0].startswith("✔ lm_loss: 20 random cases")
    assert lines[2].startswith("✔ gpt_forward: 8 random GPTs")
    assert lines[4].startswith("✔ generate_with_cache: 10 random prompts")
    assert lines[6].startswith("✔ gpt_num_parameters: 20 configurations")


def test_seed_from_environment_makes_inputs_repeat(monkeypatch):
    seen = []

    def spy(logits, targets):
        seen.append(targets.tolist())
        return lm_loss(logits, targets)

    monkeypatch.setenv("LLMKIT_CHECK_SEED", "5")
    ch03.check_lm_loss(spy)
    first, seen[:] = list(seen), []
    ch03.check_lm_loss(spy)
    assert seen == first
    seen.clear()
    ch03.check_lm_loss(spy, seed=6)
    assert seen != first


def test_unfinished_stub_propagates():
    def stub(*args):
        raise NotImplementedError("lm_loss")

    for check in (
        ch03.check_lm_loss,
        ch03.check_gpt_forward,
        ch03.check_generate_with_cache,
        ch03.check_num_parameters,
    ):
        with pytest.raises(NotImplementedError):
            check(stub, seed=0)


def test_checks_refuse_llmkit_functions():
    from llmkit.decoding import greedy
    from llmkit.train import cross_entropy_loss

    with pytest.raises(AssertionError, match="lm_loss: this is llmkit's own function"):
        ch03.check_lm_loss(cross_entropy_loss, seed=0)
    with pytest.raises(AssertionError, match="generate_with_cache: this is llmkit's own"):
        ch03.check_generate_with_cache(functools.partial(greedy), seed=0)


# ------------------------------------------------------------------ failing: lm_loss


def _loss_fails(fn, match):
    with pytest.raises(AssertionError, match=match) as err:
        ch03.check_lm_loss(fn, seed=0)
    assert "hint:" in str(err.value)
    return str(err.value)


def test_lm_loss_mean_over_all_positions():
    def wrong(logits, targets):
        keep = targets != -100
        nll = -logits.log_softmax(-1).gather(-1, targets.clamp(min=0)[..., None])[..., 0]
        return (nll * keep).sum() / targets.numel()

    _loss_fails(wrong, "not by batch \\* seq")


def test_lm_loss_ignores_nothing():
    def wrong(logits, targets):  # crashes on -100
        return -logits.log_softmax(-1).gather(-1, targets[..., None]).mean()

    _loss_fails(wrong, "lm_loss: your function raised RuntimeError")


def test_lm_loss_sum_shift_sign_dim_and_float():
    _loss_fails(lambda lg, t: lm_loss(lg, t) * (t != -100).sum(), "the mean, not the sum")
    _loss_fails(
        lambda lg, t: lm_loss(lg[:, :-1], t[:, 1:]) if lg.shape[1] > 1 else lm_loss(lg, t),
        "do not shift them again",
    )
    _loss_fails(lambda lg, t: -lm_loss(lg, t), "negative")

    def wrong_dim(logits, targets):
        keep = targets != -100
        lp = logits.log_softmax(1).gather(-1, targets.clamp(min=0)[..., None])[..., 0]
        return -(lp * keep).sum() / keep.sum()

    _loss_fails(wrong_dim, "the last dimension")
    _loss_fails(lambda lg, t: lm_loss(lg, t).item(), "expected a scalar tensor, got float")
    _loss_fails(lambda lg, t: lm_loss(lg.detach(), t), "no gradient")
    _loss_fails(lambda lg, t: None, "returned None")


# ------------------------------------------------------------------ failing: forward


@pytest.mark.parametrize(
    ("slip", "match"),
    [
        ({"causal": False}, "causal mask"),
        ({"pos": False}, "position embeddings"),
        ({"gelu": "none"}, "tanh approximation"),
        ({"scale": False}, "sqrt\\(head_dim\\)"),
        ({"final_ln": False}, "final LayerNorm"),
    ],
)
def test_gpt_forward_names_the_slip(slip, match):
    with pytest.raises(AssertionError, match=f"(?s)logits differ.*hint: .*{match}"):
        ch03.check_gpt_forward(functools.partial(gpt_forward, **slip), seed=0)


def test_gpt_forward_post_ln_and_head_split():
    def post_ln(params, ids, n_head):
        return ch03._reference_forward(params, ids, n_head, pre_ln=False)

    with pytest.raises(AssertionError, match="pre-LayerNorm"):
        ch03.check_gpt_forward(post_ln, seed=0)

    def wrong_heads(params, ids, n_head):  # heads interleaved: (d, h) instead of (h, d)
        real_view = torch.Tensor.view

        def view(self, *shape):
            if len(shape) == 4:
                b, t, h, hd = shape
                return real_view(self, b, t, hd, h).transpose(2, 3)
            return real_view(self, *shape)

        torch.Tensor.view = view
        try:
            return gpt_forward(params, ids, n_head)
        finally:
            torch.Tensor.view = real_view

    with pytest.raises(AssertionError, match="logits differ"):
        ch03.check_gpt_forward(wrong_heads, seed=0)


def test_gpt_forward_shape_and_mutation():
    def last_only(params, ids, n_head):
        return gpt_forward(params, ids, n_head)[:, -1]

    with pytest.raises(AssertionError, match="one row of vocab_size logits per position"):
        ch03.check_gpt_forward(last_only, seed=0)

    def untied_shape(params, ids, n_head):
        return gpt_forward(params, ids, n_head)[..., :-1]

    with pytest.raises(AssertionError, match="have shape"):
        ch03.check_gpt_forward(untied_shape, seed=0)

    def mutates(params, ids, n_head):
        out = gpt_forward(params, ids, n_head)
        params["wte.weight"].mul_(2)
        return out

    with pytest.raises(AssertionError, match="modified params"):
        ch03.check_gpt_forward(mutates, seed=0)


# ------------------------------------------------------------------ failing: generation


def test_generation_without_the_cache_is_refused():
    def recompute(model, ids, n):
        for _ in range(n):
            ids = torch.cat([ids, model(ids)[:, -1].argmax(-1, keepdim=True)], 1)
        return ids

    with pytest.raises(AssertionError, match="called model\\(ids\\)"):
        ch03.check_generate_with_cache(recompute, seed=0)

    def cache_but_whole_sequence(model, ids, n):
        for _ in range(n):
            logits, _ = model.forward_with_cache(ids, model.new_cache())
            ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], 1)
        return ids

    with pytest.raises(AssertionError, match="(?s)tokens were fed.*feed the prompt once"):
        ch03.check_generate_with_cache(cache_but_whole_sequence, seed=0)

    with pytest.raises(AssertionError, match="do not call model.generate"):
        ch03.check_generate_with_cache(lambda m, ids, n: m.generate(ids, n), seed=0)


def test_generation_off_by_one_and_wrong_position():
    def one_too_many(model, ids, n):
        return generate_with_cache(model, ids, n + 1)

    with pytest.raises(AssertionError, match="exactly n new tokens"):
        ch03.check_generate_with_cache(one_too_many, seed=0)

    def first_position(model, ids, n):  # argmax of the first row instead of the last
        logits, cache = model.forward_with_cache(ids, model.new_cache())
        out = ids
        for _ in range(n):
            nxt = logits[:, 0].argmax(-1, keepdim=True)
            out = torch.cat([out, nxt], 1)
            logits, cache = model.forward_with_cache(nxt, cache)
        return out

    with pytest.raises(AssertionError, match="(?s)wrong tokens.*last\\* position"):
        ch03.check_generate_with_cache(first_position, seed=0)

    def refeeds_the_prompt_token(model, ids, n):  # feeds the wrong token: the previous one
        logits, cache = model.forward_with_cache(ids, model.new_cache())
        out = ids
        prev = ids[:, -1:]
        for _ in range(n):
            nxt = logits[:, -1].argmax(-1, keepdim=True)
            out = torch.cat([out, nxt], 1)
            logits, cache = model.forward_with_cache(prev, cache)
            prev = nxt
        return out

    with pytest.raises(AssertionError, match="wrong tokens"):
        ch03.check_generate_with_cache(refeeds_the_prompt_token, seed=0)


# ------------------------------------------------------------------ failing: count


@pytest.mark.parametrize(
    ("wrong", "match"),
    [
        (lambda V, T, L, D, tied=True: gpt_num_parameters(V, T, L, D, not tied), "counted once"),
        (
            lambda V, T, L, D, tied=True: gpt_num_parameters(V, T, L, D, tied) - T * D,
            "position embeddings",
        ),
        (
            lambda V, T, L, D, tied=True: gpt_num_parameters(V, T, L, D, tied) - 2 * D,
            "final LayerNorm",
        ),
        (
            lambda V, T, L, D, tied=True: gpt_num_parameters(V, T, L, D, tied) - L * 9 * D,
            "every bias",
        ),
        (
            lambda V, T, L, D, tied=True: gpt_num_parameters(V, T, L, D, tied) - L * 4 * D,
            "two LayerNorms",
        ),
        (
            lambda V, T, L, D, tied=True: gpt_num_parameters(V, T, L, D, tied) - L * D * D,
            "per block",
        ),
    ],
)
def test_num_parameters_hints(wrong, match):
    with pytest.raises(AssertionError, match=match):
        ch03.check_num_parameters(wrong, seed=0)

"""Check functions for the chapter-03 lab ("GPT").

One function per exercise. Each calls the student's function on random inputs (plus fixed
edge cases), compares with ``llmkit``'s GPT, prints one line on success and raises
``AssertionError`` on failure: the first line says what is wrong, a ``hint:`` line what
to look at. A ``NotImplementedError`` from an unfinished stub is let through (the grader
counts it as a failure). Seeds and the refusal of ``llmkit``'s own functions work as in
:mod:`llmkit.course.checks`.

============================  ===========================================================
check                         student's function
============================  ===========================================================
``check_lm_loss``             ``lm_loss(logits: (b, t, K), targets: (b, t)) -> scalar``
``check_gpt_forward``         ``gpt_forward(params: state dict, ids: (b, t), n_head)``
                              ``-> logits (b, t, K)``
``check_generate_with_cache`` ``generate_with_cache(model, ids: (b, t), n) -> (b, t + n)``
``check_num_parameters``      ``gpt_num_parameters(vocab_size, block_size, n_layer,``
                              ``d_model, tied=True) -> int``
============================  ===========================================================

``check_gpt_forward`` recognises the usual slips (no causal mask, no position
embeddings, the exact GELU instead of GPT-2's tanh approximation, a missing attention
scale, post-LayerNorm blocks, no final LayerNorm) by comparing the answer with
deliberately wrong versions of the forward pass, and names the one that matches.
``check_generate_with_cache`` hands the student's function a wrapped model that counts
the tokens fed to ``forward_with_cache``, so recomputing the whole sequence at each step
is caught even though it gives the right tokens.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from llmkit.course.checks import call_student, check_rng, passed, reject_library
from llmkit.course.checks import require_result as _require_result
from llmkit.decoding import greedy as _ref_greedy
from llmkit.gpt import GPT, GPTConfig
from llmkit.train import cross_entropy_loss as _ref_cross_entropy

__all__ = [
    "check_lm_loss",
    "check_gpt_forward",
    "check_generate_with_cache",
    "check_num_parameters",
]


# --------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------


_CRASH_HINTS = {
    "lm_loss": "targets equal to -100 are not token ids: replace them by a valid index "
    "before gather (e.g. targets.masked_fill(targets == -100, 0)) and leave those "
    "positions out of the mean",
    "gpt_forward": "compare your shapes with the table of the exercise; nn.Linear weights "
    "are (out, in), so a layer computes x @ W.T + b",
    "generate_with_cache": "the model offers model.new_cache() and "
    "model.forward_with_cache(new_ids, cache) -> (logits, cache); new_ids is (batch, m)",
    "gpt_num_parameters": "return an int computed from the four sizes",
}


def _call(fn: Callable[..., Any], name: str, inputs: str, *args: Any) -> Any:
    """Call the student's function; turn a crash (not NotImplementedError) into a hint."""
    return call_student(fn, name, inputs, *args, hint=_CRASH_HINTS[name])


def _fail(name: str, what: str, inputs: str, hint: str) -> AssertionError:
    return AssertionError(f"{name}: {what}\n  input: {inputs}\n  hint: {hint}")


def _torch_seed(rng: random.Random) -> torch.Generator:
    return torch.Generator().manual_seed(rng.randrange(2**31))


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float, atol: float) -> bool:
    return a.shape == b.shape and torch.allclose(a.double(), b.double(), rtol=rtol, atol=atol)


# --------------------------------------------------------------------------------------
# exercise 1: the language-model loss
# --------------------------------------------------------------------------------------


def _loss_variants(logits: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
    """Wrong answers that students write, with the hint each deserves."""
    V = logits.shape[-1]
    keep = targets != -100
    safe = targets.masked_fill(~keep, 0)
    nll = -logits.log_softmax(-1).gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    out = {
        "average over the positions whose target is not -100 only (divide by their "
        "number, not by batch * seq)": (nll * keep).sum() / targets.numel(),
        "return the mean, not the sum, of the per-position losses": (nll * keep).sum(),
        "the targets are already the next tokens: do not shift them again": F.cross_entropy(
            logits[:, :-1].reshape(-1, V), targets[:, 1:].reshape(-1), ignore_index=-100
        )
        if logits.shape[1] > 1 and bool((targets[:, 1:] != -100).any())
        else None,
        "normalise over the vocabulary (the last dimension), not over the positions": (
            -(logits.log_softmax(1).gather(-1, safe.unsqueeze(-1)).squeeze(-1)) * keep
        ).sum()
        / keep.sum(),
        "the loss is the *negative* log-probability of the target": -(nll * keep).sum()
        / keep.sum(),
    }
    return {k: v for k, v in out.items() if v is not None}


def check_lm_loss(
    fn: Callable[[torch.Tensor, torch.Tensor], Any], cases: int = 20, seed: int | None = None
) -> None:
    """Check ``fn(logits, targets) -> scalar tensor`` against ``F.cross_entropy`` with
    ``ignore_index=-100`` (the loss of :meth:`llmkit.gpt.GPT.loss`).

    ``logits: (b, t, K)`` float, ``targets: (b, t)`` int64 with some entries ``-100``; the
    result must be a differentiable scalar tensor equal to the mean negative
    log-probability of the non-ignored targets.
    """
    name = "lm_loss"
    reject_library(name, fn, _ref_cross_entropy)
    if not isinstance(cases, int) or cases < 4:
        raise ValueError(f"cases must be an int >= 4, got {cases!r}")
    rng = check_rng(seed)
    for case in range(cases):
        g = _torch_seed(rng)
        b, t, V = rng.randint(1, 4), rng.randint(1, 9), rng.randint(2, 12)
        if case == 0:
            b, t = 1, 1
        logits = torch.randn(b, t, V, generator=g) * rng.choice([0.5, 2.0, 5.0])
        targets = torch.randint(0, V, (b, t), generator=g)
        if case >= 2 and rng.random() < 0.6:  # ignore some positions, never all
            drop = torch.rand(b, t, generator=g) < 0.4
            drop.view(-1)[rng.randrange(b * t)] = False
            targets[drop] = -100
        expected = F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1), ignore_index=-100)
        logits.requires_grad_(True)
        shown = (
            f"logits of shape {tuple(logits.shape)}, targets={targets.tolist()}"
            if b * t <= 12
            else f"logits of shape {tuple(logits.shape)}, targets of shape {tuple(targets.shape)}"
        )
        got = _call(fn, name, shown, logits, targets.clone())
        _require_result(got, name, shown)
        if not isinstance(got, torch.Tensor):
            raise _fail(
                name,
                f"expected a scalar tensor, got {type(got).__name__}",
                shown,
                "return a tensor (not a float or .item()) so that loss.backward() works",
            )
        if got.numel() != 1:
            raise _fail(
                name,
                f"expected a scalar, got shape {tuple(got.shape)}",
                shown,
                "average the per-position losses into one number",
            )
        if got.grad_fn is None:
            raise _fail(
                name,
                "the result is not connected to logits (no gradient)",
                shown,
                "compute the loss from logits with tensor operations, without .detach() or .item()",
            )
        got = got.detach().reshape(())
        if not math.isclose(float(got), float(expected), rel_tol=1e-5, abs_tol=1e-6):
            hint = "use log_softmax over the last dimension and pick the target's entry"
            with torch.no_grad():
                for why, wrong in _loss_variants(logits.detach(), targets).items():
                    if math.isclose(float(got), float(wrong), rel_tol=1e-5, abs_tol=1e-6):
                        hint = why
                        break
            raise _fail(
                name,
                f"the loss is {float(got):.6f}, expected {float(expected):.6f}",
                shown,
                hint,
            )
    passed(name, f"{cases} random cases match F.cross_entropy(ignore_index=-100)")


# --------------------------------------------------------------------------------------
# exercise 2: the forward pass from a state dict
# --------------------------------------------------------------------------------------


def _reference_forward(
    params: dict[str, torch.Tensor],
    ids: torch.Tensor,
    n_head: int,
    *,
    causal: bool = True,
    positions: bool = True,
    gelu: str = "tanh",
    scale: bool = True,
    pre_ln: bool = True,
    final_ln: bool = True,
) -> torch.Tensor:
    """GPT's forward pass written out; the keyword arguments switch on the usual mistakes."""

    def linear(x, name):
        return x @ params[f"{name}.weight"].T + params[f"{name}.bias"]

    def ln(x, name):
        return F.layer_norm(
            x, x.shape[-1:], params[f"{name}.weight"], params[f"{name}.bias"], eps=1e-5
        )

    b, t = ids.shape
    x = params["wte.weight"][ids]
    if positions:
        x = x + params["wpe.weight"][:t]
    d = x.shape[-1]
    hd = d // n_head
    n_layer = len({k.split(".")[1] for k in params if k.startswith("blocks.")})
    allowed = torch.ones(t, t, dtype=torch.bool).tril()
    for i in range(n_layer):
        p = f"blocks.{i}"
        h = ln(x, f"{p}.ln_1") if pre_ln else x
        q, k, v = linear(h, f"{p}.attn.qkv").split(d, dim=-1)
        q, k, v = (z.reshape(b, t, n_head, hd).transpose(1, 2) for z in (q, k, v))
        scores = q @ k.transpose(-2, -1)
        if scale:
            scores = scores / math.sqrt(hd)
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
    if final_ln:
        x = ln(x, "ln_f")
    return x @ params["wte.weight"].T


_FORWARD_SLIPS = [
    (
        {"causal": False},
        "position n must not attend to later positions: set the scores above the "
        "diagonal to -inf before the softmax (the causal mask)",
    ),
    ({"positions": False}, "add the position embeddings wpe.weight[:t] to the token embeddings"),
    (
        {"gelu": "none"},
        "GPT-2's MLP uses the tanh approximation of GELU: F.gelu(x, approximate='tanh')",
    ),
    ({"scale": False}, "divide the attention scores by sqrt(head_dim)"),
    (
        {"pre_ln": False},
        "GPT-2 blocks are pre-LayerNorm: x + attn(ln_1(x)), then x + mlp(ln_2(x))",
    ),
    ({"final_ln": False}, "apply the final LayerNorm ln_f before the output projection"),
]


def _random_gpt(rng: random.Random, *, layers=(1, 3), block=(4, 12)) -> GPT:
    n_head = rng.randint(1, 3)
    config = GPTConfig(
        vocab_size=rng.randint(5, 20),
        block_size=rng.randint(*block),
        n_layer=rng.randint(*layers),
        n_head=n_head,
        d_model=n_head * rng.choice([2, 4, 6]),
    )
    torch.manual_seed(rng.randrange(2**31))
    model = GPT(config).double().eval()
    with torch.no_grad():  # make every parameter matter: no unit gains or zero biases
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0.0, 0.5)
            elif ".ln_" in name or name.startswith("ln_f"):
                p.uniform_(0.5, 1.5)
            else:
                p.mul_(rng.uniform(5.0, 15.0))
    return model


def check_gpt_forward(
    fn: Callable[[dict[str, torch.Tensor], torch.Tensor, int], Any],
    cases: int = 8,
    seed: int | None = None,
) -> None:
    """Check ``fn(params, ids, n_head) -> logits`` against :class:`llmkit.gpt.GPT`.

    ``params`` is a GPT's ``state_dict()`` (float64; ``lm_head.weight`` is the same tensor as
    ``wte.weight``), ``ids`` a ``(b, t)`` int64 tensor with ``t <= block_size``. The
    logits must match ``model(ids)`` to 1e-7.
    """
    name = "gpt_forward"
    reject_library(name, fn)
    if not isinstance(cases, int) or cases < 2:
        raise ValueError(f"cases must be an int >= 2, got {cases!r}")
    rng = check_rng(seed)
    for case in range(cases):
        model = _random_gpt(rng)
        c = model.config
        b = rng.randint(1, 3)
        t = 1 if case == 0 else rng.randint(2, c.block_size)
        ids = torch.randint(0, c.vocab_size, (b, t), generator=_torch_seed(rng))
        params = {k: v.detach().clone() for k, v in model.state_dict().items()}
        originals = {k: v.clone() for k, v in params.items()}
        shown = (
            f"a GPT with vocab_size={c.vocab_size}, n_layer={c.n_layer}, n_head={c.n_head}, "
            f"d_model={c.d_model}; ids of shape {tuple(ids.shape)}"
        )
        with torch.no_grad():
            expected = model(ids)
            got = _call(fn, name, shown, params, ids.clone(), c.n_head)
        _require_result(got, name, shown)
        if not isinstance(got, torch.Tensor):
            raise _fail(
                name,
                f"expected a tensor, got {type(got).__name__}",
                shown,
                "return the logits as a tensor",
            )
        if tuple(got.shape) != tuple(expected.shape):
            raise _fail(
                name,
                f"the logits have shape {tuple(got.shape)}, expected {tuple(expected.shape)}",
                shown,
                "one row of vocab_size logits per position: (batch, seq, vocab_size); the "
                "output projection is the (tied) token embedding: x @ wte.weight.T",
            )
        if any(not torch.equal(params[k], originals[k]) for k in params):
            raise _fail(
                name,
                "your function modified params",
                shown,
                "compute new tensors instead of changing the weights in place",
            )
        got = got.detach()
        if not _close(got, expected, rtol=1e-6, atol=1e-7):
            hint = (
                "follow GPT.forward: embeddings, then per block x + attn(ln_1(x)) and "
                "x + mlp(ln_2(x)), then ln_f and the tied projection; q, k, v are the three "
                "d_model-wide thirds of attn.qkv's output, each split into n_head heads"
            )
            with torch.no_grad():
                for slip, why in _FORWARD_SLIPS:
                    wrong = _reference_forward(params, ids, c.n_head, **slip)
                    if _close(got, wrong, rtol=1e-6, atol=1e-7):
                        hint = why
                        break
            diff = (got.double() - expected).abs().max().item()
            raise _fail(
                name, f"the logits differ from GPT's (max abs diff {diff:.3g})", shown, hint
            )
    passed(name, f"{cases} random GPTs match llmkit.gpt.GPT")


# --------------------------------------------------------------------------------------
# exercise 3: greedy generation with a KV cache
# --------------------------------------------------------------------------------------


class _CountingModel:
    """A GPT that counts what is fed to it; only the KV-cache protocol is allowed."""

    def __init__(self, model: GPT) -> None:
        self._model = model
        self.config = model.config
        self.fed = 0
        self.cache_calls = 0
        self.full_calls = 0

    def new_cache(self):
        return self._model.new_cache()

    def forward_with_cache(self, ids: torch.Tensor, cache=None):
        self.cache_calls += 1
        self.fed += int(ids.shape[-1])
        return self._model.forward_with_cache(ids, cache)

    def __call__(self, ids: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        self.full_calls += 1
        return self._model(ids, *args, **kwargs)

    forward = __call__

    def generate(self, *args: Any, **kwargs: Any):
        raise AssertionError(
            "generate_with_cache: do not call model.generate; write the loop with "
            "model.forward_with_cache"
        )


@torch.no_grad()
def _greedy_recompute(model: GPT, ids: torch.Tensor, n: int) -> torch.Tensor:
    for _ in range(n):
        nxt = model(ids)[:, -1].argmax(dim=-1, keepdim=True)
        ids = torch.cat([ids, nxt], dim=1)
    return ids


def check_generate_with_cache(
    fn: Callable[[Any, torch.Tensor, int], Any], cases: int = 10, seed: int | None = None
) -> None:
    """Check ``fn(model, ids, n) -> (b, t + n)`` ids against greedy decoding by full
    recomputation, and that it used the KV cache.

    ``model`` offers ``forward_with_cache(ids, cache) -> (logits, cache)`` and
    ``new_cache()`` (:class:`llmkit.gpt.GPT`'s protocol); it counts the tokens fed. The
    prompt must be fed once and then one token per step: at most ``t + n`` tokens in all.
    Calling ``model(ids)`` is refused.
    """
    name = "generate_with_cache"
    reject_library(name, fn, _ref_greedy)
    if not isinstance(cases, int) or cases < 3:
        raise ValueError(f"cases must be an int >= 3, got {cases!r}")
    rng = check_rng(seed)
    for case in range(cases):
        model = _random_gpt(rng, layers=(1, 2), block=(12, 24))
        c = model.config
        b = 2 if case % 3 == 2 else 1
        t = rng.randint(1, 5)
        n = 0 if case == 0 else (1 if case == 1 else rng.randint(2, c.block_size - t))
        ids = torch.randint(0, c.vocab_size, (b, t), generator=_torch_seed(rng))
        expected = _greedy_recompute(model, ids, n)
        spy = _CountingModel(model)
        shown = f"ids={ids.tolist()}, n={n} (a random GPT with block_size={c.block_size})"
        with torch.no_grad():
            got = _call(fn, name, shown, spy, ids.clone(), n)
        _require_result(got, name, shown)
        if not isinstance(got, torch.Tensor):
            raise _fail(
                name,
                f"expected a tensor, got {type(got).__name__}",
                shown,
                "return the ids as a (batch, t + n) tensor",
            )
        if spy.full_calls:
            raise _fail(
                name,
                "your function called model(ids), recomputing the whole sequence",
                shown,
                "use only model.forward_with_cache(new_ids, cache): the prompt in the first "
                "call, then one new token per call",
            )
        if tuple(got.shape) != tuple(expected.shape):
            raise _fail(
                name,
                f"the result has shape {tuple(got.shape)}, expected {tuple(expected.shape)}",
                shown,
                "return the prompt followed by exactly n new tokens, (batch, t + n)",
            )
        if not torch.equal(got.long(), expected):
            bad = (got.long() != expected).nonzero()
            where = tuple(int(i) for i in bad[0]) if len(bad) else ()
            hint = (
                "each new token is the argmax of the *last* position's logits; after the "
                "prompt, feed only the token you just chose, with the same cache"
            )
            if where and where[1] < t:
                hint = "the result must start with the prompt ids, unchanged"
            raise _fail(
                name,
                f"wrong tokens: {got.tolist()}, expected {expected.tolist()} "
                f"(first difference at {where})",
                shown,
                hint,
            )
        if n and spy.fed > t + n:
            raise _fail(
                name,
                f"{spy.fed} tokens were fed to forward_with_cache for a prompt of {t} and "
                f"{n} new tokens",
                shown,
                "with a cache, feed the prompt once and then only the one new token per "
                f"step: at most {t + n} tokens in all",
            )
    passed(name, f"{cases} random prompts match greedy decoding, with the cache")


# --------------------------------------------------------------------------------------
# exercise 4: counting parameters
# --------------------------------------------------------------------------------------


def _count(vocab_size: int, block_size: int, n_layer: int, d_model: int, tied: bool) -> int:
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


def check_num_parameters(fn: Callable[..., Any], cases: int = 20, seed: int | None = None) -> None:
    """Check ``fn(vocab_size, block_size, n_layer, d_model, tied=True) -> int`` against
    :meth:`llmkit.gpt.GPT.num_parameters` (with biases; ``tied=False`` counts a separate
    output projection)."""
    name = "gpt_num_parameters"
    reject_library(name, fn)
    if not isinstance(cases, int) or cases < 3:
        raise ValueError(f"cases must be an int >= 3, got {cases!r}")
    rng = check_rng(seed)
    inputs = [(50_257, 1024, 12, 768, True), (65, 128, 4, 128, False)]
    while len(inputs) < cases:
        inputs.append(
            (
                rng.randint(2, 500),
                rng.randint(1, 300),
                rng.randint(1, 8),
                rng.randint(1, 64),
                rng.random() < 0.5,
            )
        )
    for V, T, L, D, tied in inputs:
        expected = _count(V, T, L, D, tied)
        shown = f"vocab_size={V}, block_size={T}, n_layer={L}, d_model={D}, tied={tied}"
        got = _call(fn, name, shown, V, T, L, D, tied)
        _require_result(got, name, shown)
        if isinstance(got, torch.Tensor):
            got = got.item()
        if not isinstance(got, int | float) or got != expected:
            diff = got - expected if isinstance(got, int | float) else None
            hint = (
                "per block: ln_1 and ln_2 (2 d each), attn.qkv (3 d^2 + 3 d), attn.proj "
                "(d^2 + d), mlp.fc (4 d^2 + 4 d), mlp.proj (4 d^2 + d); plus wte (V d), wpe "
                "(T d) and ln_f (2 d)"
            )
            if diff in (V * D, -V * D):
                hint = (
                    "tied=True: the output projection is the token embedding, counted once; "
                    "tied=False: it is a second V x d matrix (no bias)"
                )
            elif diff == -T * D:
                hint = "count the position embeddings, block_size x d_model"
            elif diff == -2 * D:
                hint = "count the final LayerNorm ln_f (a gain and a bias, d each)"
            elif diff == -9 * D * L:
                hint = "count every bias in each block: 3 d + d + 4 d + d = 9 d"
            elif diff == -4 * D * L:
                hint = "count each block's two LayerNorms: a gain and a bias of d each"
            raise _fail(name, f"got {got!r}, expected {expected:,}", shown, hint)
    passed(name, f"{cases} configurations match GPT.num_parameters()")

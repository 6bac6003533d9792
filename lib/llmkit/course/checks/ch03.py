"""Checks of lab 03 (GPT): one :class:`Exercise` per exercise.

===================  ==================================================  ======================
exercise             the student's function                              off limits
===================  ==================================================  ======================
lm_loss              ``(logits (b, t, K), targets (b, t)) -> scalar``     ``F.cross_entropy``,
                     (targets -100 ignored)                              ``F.nll_loss``,
                                                                         llmkit's losses
gpt_forward          ``(params, ids (b, t), n_head) -> logits``           ``llmkit.gpt``,
                                                                         ``llmkit.nn``, SDPA
attend_with_cache    ``(q, k, v (b, h, m, hd), cache) -> (out, cache)``   ``llmkit.nn``, SDPA
                     cache: ``None`` or ``(k, v)``, ``(b, h, s, hd)``
generate_with_cache  ``(model: GPT, ids (b, t), n) -> ids (b, t + n)``    the GPT's forward
                     (greedy, one cache entry per block)                 passes and cache,
                                                                         llmkit's attention
train_loop           ``(model, batches, steps, lr, warmup_steps,``        ``llmkit.train``,
                     ``max_grad_norm) -> [loss of each step]``           ``lr_scheduler``
gpt_num_parameters   ``(vocab_size, block_size, n_layer, d_model,``       ``llmkit.gpt``,
                     ``tied) -> int``                                    ``llmkit.scaling``
===================  ==================================================  ======================

Each exercise is graded on its own: while ``generate_with_cache`` runs, the student's
``attend_with_cache`` is replaced by the reference one, and while ``train_loop`` runs,
their ``lm_loss``.

**The spy of generate_with_cache.** The student gets a GPT (a fresh one per case) whose
every weight is a :class:`_Metered` tensor: whatever the code does with it (the model's
modules, ``F.linear``, ``@``, a state dict fed to a hand-written forward pass), each
operation that applies a weight to activations adds ``rows x elements`` to the model's
meter. There is no other object behind it to call. The check then requires that every
block's weights were applied to each token position once: the prompt once, then one new
token per step (at least ``b (t + n - 1)`` and at most ``b (t + n)`` positions per
weight). Recomputing the sequence exceeds the bound; stripping the weights of their type
(``as_subclass``) to compute unseen falls below it.

**train_loop** trains the model in place, so its arguments are passed as keywords (the
runner checks positional arguments for changes) and the reference starts from a copy
kept in the case (:class:`_TrainCase`), not from the trained model.
"""

from __future__ import annotations

import copy
import random
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from llmkit.gpt import GPT, GPTConfig

from .runner import Case, Exercise, Slip, compare

__all__ = [
    "check_lm_loss",
    "check_gpt_forward",
    "check_attend_with_cache",
    "check_generate_with_cache",
    "check_train_loop",
    "check_num_parameters",
]

_REF = "llmkit.course.checks.reference.ch03"
_SDPA = [
    "torch.nn.functional:scaled_dot_product_attention",
    "torch.nn:MultiheadAttention",
    "torch.nn.functional:multi_head_attention_forward",
]


class _Fresh(Sequence):
    """Fixed cases built afresh for every check: their arguments carry meters or are
    trained in place, so a case object must not be reused by a second check."""

    def __init__(self, make: Callable[..., Case], *params: tuple) -> None:
        self.make, self.params = make, params

    def __len__(self) -> int:
        return len(self.params)

    def __getitem__(self, i: int) -> Case:
        if not 0 <= i < len(self.params):
            raise IndexError(i)
        seed, *rest = self.params[i]
        return self.make(random.Random(seed), *rest)


def _seed(rng: random.Random) -> torch.Generator:
    return torch.Generator().manual_seed(rng.randrange(2**31))


def _random_gpt(rng: random.Random, layers=(1, 3), block=(4, 12), dtype=torch.float64) -> GPT:
    """A small GPT whose every parameter matters (no unit gains, no zero biases)."""
    n_head = rng.randint(1, 3)
    config = GPTConfig(
        vocab_size=rng.randint(5, 20),
        block_size=rng.randint(*block),
        n_layer=rng.randint(*layers),
        n_head=n_head,
        d_model=n_head * rng.choice([2, 4, 6]),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(rng.randrange(2**31))
        model = GPT(config).to(dtype).eval()
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.endswith("bias"):
                    p.normal_(0.0, 0.5)
                elif ".ln_" in name or name.startswith("ln_f"):
                    p.uniform_(0.5, 1.5)
                else:
                    p.mul_(rng.uniform(5.0, 15.0))
    return model


def _about(model: GPT) -> str:
    c = model.config
    return (
        f"a GPT with vocab_size={c.vocab_size}, block_size={c.block_size}, "
        f"n_layer={c.n_layer}, n_head={c.n_head}, d_model={c.d_model}"
    )


# ------------------------------------------------------------------------- lm_loss


def _loss_case(rng: random.Random) -> Case:
    g = _seed(rng)
    b, t, V = rng.randint(1, 4), rng.randint(1, 9), rng.randint(2, 12)
    logits = torch.randn(b, t, V, generator=g) * rng.choice([0.5, 2.0, 5.0])
    targets = torch.randint(0, V, (b, t), generator=g)
    if rng.random() < 0.7:  # ignore some positions, never all
        ignored = torch.rand(b, t, generator=g) < 0.4
        ignored.view(-1)[rng.randrange(b * t)] = False
        targets[ignored] = -100
    return Case((logits.requires_grad_(), targets))


def _has_gradient(case: Case, got: Any) -> str | None:
    if isinstance(got, torch.Tensor) and got.grad_fn is None:
        return (
            "the loss is not connected to logits (no gradient): compute it from logits "
            "with tensor operations, without .detach(), .item() or torch.no_grad()"
        )
    return None


LM_LOSS = Exercise(
    name="lm_loss",
    reference=f"{_REF}:lm_loss",
    forbid=[
        "torch.nn.functional:cross_entropy",
        "torch.nn.functional:nll_loss",
        "torch._C._nn:cross_entropy_loss",
        "torch._C._nn:nll_loss",
        "torch._C._nn:nll_loss_nd",
        "torch.nn:CrossEntropyLoss",
        "torch.nn:NLLLoss",
        "llmkit.train:cross_entropy_loss",
        "llmkit.lm:CausalLM.loss",
        "llmkit.seq2seq:_masked_cross_entropy",
    ],
    fixed=[
        Case(
            (
                torch.tensor([[[0.0, 1.0], [3.0, -1.0], [0.5, 0.5]]], requires_grad=True),
                torch.tensor([[1, -100, 0]]),
            )
        ),
        Case((torch.tensor([[[0.0, 1.0, 2.0]]], requires_grad=True), torch.tensor([[2]]))),
    ],
    random=_loss_case,
    hint="take log_softmax over the last dimension, gather the target's entry, and average "
    "minus it over the positions whose target is not -100",
    crash_hint="targets equal to -100 are not token ids: replace them by a valid index "
    "before gather (targets.masked_fill(targets == -100, 0)) and leave those positions out "
    "of the mean",
    slips=[
        Slip(
            f"{_REF}:lm_loss_mean_over_all",
            "average over the positions whose target is not -100 only: divide by their "
            "number, not by batch * seq",
        ),
        Slip(f"{_REF}:lm_loss_sum", "return the mean, not the sum, of the per-position losses"),
        Slip(
            f"{_REF}:lm_loss_shifted",
            "the targets are already the next tokens: do not shift them again",
        ),
        Slip(
            f"{_REF}:lm_loss_wrong_dim",
            "normalise over the vocabulary (the last dimension), not over the positions",
        ),
    ],
    after=_has_gradient,
)


# --------------------------------------------------------------------- gpt_forward


def _forward_case(rng: random.Random, t: int | None = None) -> Case:
    model = _random_gpt(rng)
    c = model.config
    b, t = rng.randint(1, 3), t or rng.randint(2, c.block_size)
    ids = torch.randint(0, c.vocab_size, (b, t), generator=_seed(rng))
    params = {k: v.detach().clone() for k, v in model.state_dict().items()}
    params["lm_head.weight"] = params["wte.weight"]  # tied, as in the state dict
    return Case((params, ids, c.n_head), label=f"params of {_about(model)}; ids of shape {(b, t)}")


GPT_FORWARD = Exercise(
    name="gpt_forward",
    reference=f"{_REF}:gpt_forward",
    forbid=["llmkit.gpt", "llmkit.lm", "llmkit.nn", *_SDPA],
    fixed=_Fresh(_forward_case, (3, 1)),
    random=_forward_case,
    cases=8,
    rtol=1e-6,
    atol=1e-6,
    hint="follow GPT.forward: embeddings, then per block x + attn(ln_1(x)) and "
    "x + mlp(ln_2(x)), then ln_f and the tied projection; q, k, v are the three d-wide "
    "thirds of attn.qkv's output, each split into n_head heads",
    crash_hint="compare your shapes with the table of the exercise; nn.Linear weights are "
    "(out, in), so a layer computes x @ W.T + b",
    slips=[
        Slip(
            f"{_REF}:gpt_forward_no_mask",
            "position n must not attend to later positions: set the scores above the "
            "diagonal to -inf before the softmax (the causal mask)",
        ),
        Slip(
            f"{_REF}:gpt_forward_no_positions",
            "add the position embeddings wpe.weight[:t] to the token embeddings",
        ),
        Slip(
            f"{_REF}:gpt_forward_exact_gelu",
            "GPT-2's MLP uses the tanh approximation of GELU: F.gelu(x, approximate='tanh')",
        ),
        Slip(f"{_REF}:gpt_forward_no_scale", "divide the attention scores by sqrt(head_dim)"),
        Slip(
            f"{_REF}:gpt_forward_post_ln",
            "GPT-2 blocks are pre-LayerNorm: x + attn(ln_1(x)), then x + mlp(ln_2(x))",
        ),
    ],
)


# --------------------------------------------------------------- attend_with_cache


def _attend_case(rng: random.Random, s: int | None = None, m: int | None = None) -> Case:
    g = _seed(rng)
    b, h, hd = rng.randint(1, 2), rng.randint(1, 3), rng.choice([2, 4, 8])
    s = rng.choice([0, 0, 1, 3, 6]) if s is None else s
    m = rng.choice([1, 1, 2, 4]) if m is None else m

    def draw(n: int) -> torch.Tensor:
        return torch.randn(b, h, n, hd, generator=g, dtype=torch.float64)

    cache = (draw(s), draw(s)) if s else None
    return Case(
        (draw(m), draw(m), draw(m), cache),
        label=f"{m} new position(s) of batch {b}, {h} head(s) of width {hd}; "
        + (f"{s} cached" if s else "cache=None"),
    )


def _compare_attend(got: Any, expected: Any, case: Case) -> str | None:
    if not (
        isinstance(got, tuple | list)
        and len(got) == 2
        and isinstance(got[1], tuple | list)
        and len(got[1]) == 2
    ):
        return f"the result should be a pair (out, (k, v)), not {type(got).__name__}"
    parts = zip((got[0], *got[1]), (expected[0], *expected[1]), strict=True)
    for (g, e), what in zip(
        parts, ("the output", "the cache's keys", "the cache's values"), strict=True
    ):
        problem = compare(g, e, rtol=1e-6, atol=1e-8, what=what)
        if problem:
            return problem
    return None


ATTEND_WITH_CACHE = Exercise(
    name="attend_with_cache",
    reference=f"{_REF}:attend_with_cache",
    forbid=["llmkit.nn", *_SDPA],
    fixed=[_attend_case(random.Random(s), s=s, m=m) for s, m in [(0, 3), (4, 1), (2, 3), (0, 1)]],
    random=_attend_case,
    cases=16,
    compare=_compare_attend,
    hint="concatenate the cached keys and values before the new ones (dim=-2), then "
    "attend with scores q @ k^T / sqrt(head_dim), masked, softmaxed over the keys",
    slips=[
        Slip(
            f"{_REF}:attend_top_left_mask",
            "the m new queries are the *last* m of the s + m positions: query i may see "
            "keys 0 .. s + i (tril with diagonal=s), not 0 .. i",
        ),
        Slip(
            f"{_REF}:attend_no_mask",
            "with several new positions (a prompt) a query must not see the keys after "
            "it: mask them (one new query alone needs no mask)",
        ),
        Slip(
            f"{_REF}:attend_ignoring_cache",
            "attend over the cached keys and values too, and return them with the new "
            "ones appended: torch.cat([cached, new], dim=-2)",
        ),
    ],
)


# ------------------------------------------------------------- generate_with_cache


class _Metered(torch.Tensor):
    """A weight that meters its use: ``rows x elements`` per operation with activations.

    An operation between metered tensors only (``W.T``, ``W.split(d)``, ``W[:t]``) gives
    metered pieces of the same source; one that also involves other tensors (``x @ W.T``,
    ``F.linear``, ``F.layer_norm``, ``W[ids]``) adds the other operand's number of rows
    (integer tensors: their number of elements) times the piece's size to the source's
    entry in the shared meter, and gives plain tensors.
    """

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        flat = [*args, *kwargs.values()]
        flat += [x for a in flat if isinstance(a, tuple | list) for x in a]
        mine = [a for a in flat if isinstance(a, _Metered)]
        others = [
            a
            for a in flat
            if isinstance(a, torch.Tensor) and not isinstance(a, _Metered) and a.dim() > 0
        ]
        with torch._C.DisableTorchFunctionSubclass():
            out = func(*args, **kwargs)
        meter = next((m.__dict__.get("_meter") for m in mine if "_meter" in m.__dict__), None)
        if others:
            if meter is not None:
                rows = max(
                    o.numel() // (o.shape[-1] or 1) if o.is_floating_point() else o.numel()
                    for o in others
                )
                for m in mine:
                    for source, size in m.__dict__.get("_sources", {}).items():
                        meter[source] = meter.get(source, 0) + rows * min(m.numel(), size)
            return out
        sources = {k: v for m in mine for k, v in m.__dict__.get("_sources", {}).items()}
        return _metered(out, sources, meter)

    def __deepcopy__(self, memo):  # noqa: ANN001 - a copy with its own (copied) meter
        with torch._C.DisableTorchFunctionSubclass():
            new = self.detach().clone().as_subclass(_Metered)
        memo[id(self)] = new
        new.__dict__.update(copy.deepcopy(self.__dict__, memo))
        return new.requires_grad_(self.requires_grad)


def _metered(out: Any, sources: dict[str, int], meter: dict | None) -> Any:
    if isinstance(out, tuple | list):
        return type(out)(_metered(o, sources, meter) for o in out)
    if not isinstance(out, torch.Tensor):
        return out
    if not isinstance(out, _Metered):
        out = out.as_subclass(_Metered)
    if "_sources" not in out.__dict__:
        out._sources, out._meter = sources, meter
    return out


#: Each metered model's meter, for the check (the weights carry it too, to count).
_METERS: weakref.WeakKeyDictionary[GPT, dict[str, int]] = weakref.WeakKeyDictionary()


def _metered_gpt(model: GPT) -> GPT:
    """``model`` with every parameter replaced by a metered copy (ties kept)."""
    meter: dict[str, int] = {}
    _METERS[model] = meter
    done: dict[int, nn.Parameter] = {}
    for prefix, module in model.named_modules():
        for name, p in list(module._parameters.items()):
            if p is not None and id(p) not in done:
                w = p.detach().clone().as_subclass(_Metered)
                w._sources, w._meter = {f"{prefix}.{name}".lstrip("."): p.numel()}, meter
                done[id(p)] = nn.Parameter(w, requires_grad=False)
            if p is not None:
                module._parameters[name] = done[id(p)]
    return model


def _generate_case(
    rng: random.Random, t: int | None = None, n: int | None = None, b: int | None = None
) -> Case:
    """A metered GPT (a fresh one: the meter counts this case's call only)."""
    model = _metered_gpt(_random_gpt(rng, layers=(1, 2), block=(12, 20)))
    c = model.config
    b, t = b or rng.randint(1, 2), t or rng.randint(1, 5)
    n = rng.randint(2, c.block_size - t) if n is None else n
    ids = torch.randint(0, c.vocab_size, (b, t), generator=_seed(rng))
    return Case((model, ids, n), label=f"{_about(model)}; ids of shape {(b, t)}, n={n}")


def _fed_once(case: Case, got: Any) -> str | None:
    model, ids, n = case.args
    (b, t), meter = ids.shape, _METERS.get(model, {})
    low, high = (b * (t + n - 1), b * (t + n)) if n else (0, b * t)
    for name, p in model.named_parameters():
        if not name.startswith("blocks."):
            continue
        fed = meter.get(name, 0) / p.numel()
        if fed > high:
            return (
                f"{name} was applied to {fed:g} token positions for a prompt of {t} and "
                f"{n} new tokens (batch {b}): the sequence was recomputed. With the cache, "
                f"feed the prompt once, then only the newest token: at most {high}"
            )
        if fed < low:
            return (
                f"{name} was applied to {fed:g} token positions, fewer than the {low} that "
                "pass through every block (every prompt token, then each new token but "
                "the last; use the model's weights as they are, no copies)"
            )
    return None


GENERATE_WITH_CACHE = Exercise(
    name="generate_with_cache",
    reference=f"{_REF}:generate_with_cache",
    forbid=[
        "llmkit.gpt:GPT",
        "llmkit.lm",
        "llmkit.nn:KVCache",
        "llmkit.nn:Block",
        "llmkit.nn:MultiHeadAttention",
        "llmkit.nn:attention",
        "llmkit.nn:sdpa_attention",
        "llmkit.nn:causal_mask",
        "llmkit.decoding",
        *_SDPA,
    ],
    substitute={"attend_with_cache": f"{_REF}:attend_with_cache"},
    fixed=_Fresh(_generate_case, (0, 3, 0, 1), (1, 1, 1, 1), (2, 4, 6, 1), (3, 3, 5, 2)),
    random=_generate_case,
    cases=8,
    after=_fed_once,
    hint="keep one (keys, values) entry per block; feed the prompt once (positions 0 .. t-1), "
    "then only the token just chosen, at the next position; each new token is the argmax "
    "of the last position's logits",
    slips=[
        Slip(
            f"{_REF}:generate_positions_restart",
            "a token fed after the prompt sits at position t, t + 1, ... (the number of "
            "cached positions): add that row of wpe.weight, not row 0",
        ),
    ],
)


# ---------------------------------------------------------------------- train_loop


@dataclass
class _TrainCase(Case):
    """A case whose keyword arguments are trained in place; ``pristine`` is a copy of
    them taken before the call, from which the reference and the slips start."""

    pristine: dict | None = None


def _train_case(rng: random.Random, steps=None, warmup=None, lr=None, clip=None) -> _TrainCase:
    steps = steps or rng.randint(6, 10)
    warmup = rng.randint(1, 3) if warmup is None else warmup
    lr, clip = lr or rng.choice([1e-2, 2e-2, 3e-2]), clip or rng.choice([0.1, 0.3, 0.5])
    config = GPTConfig(
        vocab_size=rng.randint(8, 16), block_size=8, n_layer=rng.randint(1, 2), n_head=2, d_model=16
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(rng.randrange(2**31))
        model = GPT(config)
    # torch imports its compiler (seconds) when the first optimizer is made: not in the
    # student's timed call
    torch.optim.AdamW([nn.Parameter(torch.zeros(1))])
    g = _seed(rng)
    windows = [torch.randint(0, config.vocab_size, (4, 9), generator=g) for _ in range(steps)]
    kw = {
        "model": model,
        "batches": [(w[:, :-1], w[:, 1:]) for w in windows],
        "steps": steps,
        "lr": lr,
        "warmup_steps": warmup,
        "max_grad_norm": clip,
    }
    label = (
        f"a GPT with vocab_size={config.vocab_size}, n_layer={config.n_layer}, "
        f"d_model=16; {steps} batches of 4 windows of 8 tokens; steps={steps}, lr={lr}, "
        f"warmup_steps={warmup}, max_grad_norm={clip}"
    )
    return _TrainCase(kwargs=kw, label=label, pristine=copy.deepcopy(kw))


TRAIN_LOOP = Exercise(
    name="train_loop",
    reference=f"{_REF}:train_loop",
    reference_takes="case",
    forbid=["llmkit.train", "torch.optim.lr_scheduler"],
    substitute={"lm_loss": f"{_REF}:lm_loss"},
    mutates=("model",),
    fixed=_Fresh(_train_case, (0, 8, 2, 1e-2, 0.5), (1, 6, 0, 3e-2, 0.1)),
    random=_train_case,
    cases=4,
    time_limit=60.0,
    hint="per step: zero the gradients, loss = lm_loss(model(x), y), backward, clip to "
    "max_grad_norm, set every group's lr to the schedule's value for this step, "
    "optimizer.step(); AdamW with the groups, betas and eps of the exercise",
    slips=[
        Slip(
            f"{_REF}:train_loop_no_warmup",
            "warm up first: for step < warmup_steps, lr * (step + 1) / (warmup_steps + 1)",
        ),
        Slip(
            f"{_REF}:train_loop_clip_after_step",
            "clip the gradients after backward() and *before* optimizer.step(): clipping "
            "afterwards changes nothing",
        ),
        Slip(
            f"{_REF}:train_loop_schedule_one_ahead",
            "the schedule is one step ahead: step 0 (the first update) uses "
            "lr * 1 / (warmup_steps + 1); set the rate before optimizer.step()",
        ),
        Slip(
            f"{_REF}:train_loop_decay_everything",
            "weight decay only on parameters with p.dim() >= 2 (matrices, embeddings); "
            "biases and LayerNorm gains get weight_decay=0",
        ),
    ],
)


# -------------------------------------------------------------- gpt_num_parameters


GPT_NUM_PARAMETERS = Exercise(
    name="gpt_num_parameters",
    reference=f"{_REF}:gpt_num_parameters",
    forbid=["llmkit.gpt", "llmkit.scaling"],
    fixed=[(50_257, 1024, 12, 768, True), (65, 128, 4, 128, False)],
    random=lambda rng: (
        rng.randint(2, 500),
        rng.randint(1, 300),
        rng.randint(1, 8),
        rng.randint(1, 64),
        rng.random() < 0.5,
    ),
    hint="per block: ln_1 and ln_2 (2 d each), attn.qkv (3 d^2 + 3 d), attn.proj (d^2 + d), "
    "mlp.fc (4 d^2 + 4 d), mlp.proj (4 d^2 + d); plus wte (V d), wpe (T d) and ln_f (2 d)",
    slips=[
        Slip(
            f"{_REF}:num_parameters_tie_swapped",
            "tied=True: the output projection is the token embedding, counted once; "
            "tied=False: it is a second V x d matrix (no bias)",
        ),
        Slip(
            f"{_REF}:num_parameters_no_positions",
            "count the position embeddings, block_size x d_model",
        ),
        Slip(
            f"{_REF}:num_parameters_no_biases",
            "count every bias in each block: 3 d + d + 4 d + d = 9 d",
        ),
        Slip(
            f"{_REF}:num_parameters_no_norms",
            "count the LayerNorms: a gain and a bias of d each, two per block and ln_f",
        ),
    ],
)


def check_lm_loss(fn, cases: int = 20, seed: int | None = None) -> None:
    """Check ``lm_loss(logits, targets)`` against ``F.cross_entropy(ignore_index=-100)``."""
    LM_LOSS.check(fn, cases=cases, seed=seed)


def check_gpt_forward(fn, cases: int = 8, seed: int | None = None) -> None:
    """Check ``gpt_forward(params, ids, n_head)`` against :class:`llmkit.gpt.GPT`."""
    GPT_FORWARD.check(fn, cases=cases, seed=seed)


def check_attend_with_cache(fn, cases: int = 16, seed: int | None = None) -> None:
    """Check ``attend_with_cache(q, k, v, cache)``."""
    ATTEND_WITH_CACHE.check(fn, cases=cases, seed=seed)


def check_generate_with_cache(fn, cases: int = 8, seed: int | None = None) -> None:
    """Check ``generate_with_cache(model, ids, n)``: greedy tokens, each fed once."""
    GENERATE_WITH_CACHE.check(fn, cases=cases, seed=seed)


def check_train_loop(fn, cases: int = 4, seed: int | None = None) -> None:
    """Check ``train_loop(...)``'s per-step losses against :func:`llmkit.train.train`."""
    TRAIN_LOOP.check(fn, cases=cases, seed=seed)


def check_num_parameters(fn, cases: int = 20, seed: int | None = None) -> None:
    """Check ``gpt_num_parameters(...)`` against :meth:`llmkit.gpt.GPT.num_parameters`."""
    GPT_NUM_PARAMETERS.check(fn, cases=cases, seed=seed)

"""Lab 04's checks, what tests/test_checks.py does not cover: the slips are named, the
library and transformers' warpers are off limits, sampling_probs is graded with the
reference filters, top-p ties may split either way."""

from __future__ import annotations

import importlib.util
import math
from functools import partial as P

import pytest
import torch

from llmkit.course.checks import ch04
from llmkit.decoding import beam_search, sample

INF = float("inf")
TEMP, TOP_K, TOP_P = ch04.check_apply_temperature, ch04.check_top_k_filter, ch04.check_top_p_filter
PROBS, BEAM = ch04.check_sampling_probs, ch04.check_beam_search_step


def top_k_filter(logits, k, *, strict=False, fill=-INF, exactly_k=False):
    top = torch.topk(logits, min(k, logits.shape[-1]), dim=-1)
    if exactly_k:  # ties with the k-th largest split
        return logits.masked_fill(
            ~torch.zeros_like(logits, dtype=bool).scatter(-1, top.indices, True), fill
        )
    kth = top.values[..., -1:]
    return logits.masked_fill(logits <= kth if strict else logits < kth, fill)


def top_p_filter(logits, p, *, shift=1, scatter=True, fill=-INF):
    sorted_probs, order = torch.softmax(logits, dim=-1).sort(dim=-1, descending=True)
    before = sorted_probs.cumsum(dim=-1) - sorted_probs  # mass of the more probable tokens
    shifted = torch.cat([torch.zeros_like(before[..., :1]), before[..., :-1]], -1)
    remove = {0: before + sorted_probs > p, 1: before >= p, 2: shifted >= p}[shift]
    remove[..., 0] = False
    return logits.masked_fill(remove.scatter(-1, order, remove) if scatter else remove, fill)


def sampling_probs(logits, temperature=1.0, top_k=None, top_p=None, *, order="tkp"):
    for step in order:
        logits = logits / temperature if step == "t" else logits
        logits = top_k_filter(logits, top_k) if step == "k" and top_k is not None else logits
        logits = top_p_filter(logits, top_p) if step == "p" and top_p is not None else logits
    return logits if "l" in order else torch.softmax(logits, dim=-1)


def beam_search_step(sums, logprobs, beam_width, *, swap=False, best_first=True):
    n, v = logprobs.shape
    scores, idx = torch.topk((sums[:, None] + logprobs).reshape(-1), min(beam_width, n * v))
    if not best_first:
        idx, order = idx.sort()
        scores = scores[order]
    return (scores, idx % v, idx // v) if swap else (scores, idx // v, idx % v)


def beam_per_beam(sums, logprobs, beam_width):  # each beam gets ceil(B / n) places
    n, v = logprobs.shape
    top = torch.topk(logprobs, min(math.ceil(beam_width / n), v), dim=-1)
    cands = [(float(sums[i] + s), i, int(t)) for i in range(n)
             for s, t in zip(top.values[i], top.indices[i], strict=True)]  # fmt: skip
    best = sorted(cands, reverse=True)[: min(beam_width, n * v)]
    return tuple(torch.tensor(column) for column in zip(*best, strict=True))


@pytest.mark.parametrize(
    ("check", "wrong", "hint"),
    [
        (TEMP, lambda x, t: x * t, "multiplied"),
        (TEMP, lambda x, t: torch.softmax(x / t, -1), "not probabilities"),
        (TOP_K, P(top_k_filter, strict=True), "strictly smaller"),
        (TOP_K, P(top_k_filter, exactly_k=True), "ties are all kept"),
        (TOP_K, P(top_k_filter, fill=0.0), "not to 0"),
        (TOP_P, P(top_p_filter, shift=0), "crosses p"),
        (TOP_P, P(top_p_filter, shift=2), "one token too many"),
        (TOP_P, P(top_p_filter, scatter=False), "map the sorted positions"),
        (TOP_P, P(top_p_filter, fill=0.0), "not to 0"),
        (PROBS, P(sampling_probs, order="tkpl"), "not logits"),
        (PROBS, P(sampling_probs, order="kpt"), "temperature first"),
        (PROBS, P(sampling_probs, order="tpk"), "top-k first"),
        (PROBS, P(sampling_probs, order="kp"), "divide the logits by"),
        (BEAM, lambda s, lp, b: beam_search_step(0 * s, lp, b), "running score"),
        (BEAM, P(beam_search_step, swap=True), "swapped"),
        (BEAM, P(beam_search_step, best_first=False), "best first"),
        (BEAM, beam_per_beam, "all beams together"),
    ],
)
def test_each_slip_is_named(check, wrong, hint):
    with pytest.raises(AssertionError, match=f"(?s)expected: .*got: .*hint: .*{hint}"):
        check(wrong, seed=0)


def test_top_p_ties_may_split_either_way(capsys):
    TOP_P(lambda x, p: top_p_filter(x.flip(-1), p).flip(-1), seed=0)
    assert capsys.readouterr().out.startswith("✔ top_p_filter")
    for case in ch04.TOP_P_FILTER.fixed:  # no rounding decides a fixed case either
        assert ch04._nucleus_margin(*case) > ch04._MARGIN


# the lab imports `sample` and `beam_search`: all of their module is off limits
LIB = sample.__wrapped__.__globals__
OFF_LIMITS = [
    (TEMP, lambda x, t: LIB["filter_logits"](x, t), "llmkit.decoding"),
    (TOP_K, lambda x, k: LIB["filter_logits"](x, top_k=k), "llmkit.decoding"),
    (TOP_P, lambda x, p: LIB["top_p_filter"](x, p), "llmkit.decoding"),
    (PROBS, lambda x, **kw: LIB["filter_logits"](x, **kw).softmax(-1), "llmkit.decoding"),
]
if importlib.util.find_spec("transformers") is not None:
    OFF_LIMITS += [
        (check, lambda x, a, w=w: getattr(__import__("transformers"), w)(a)(None, x), w)
        for check, w in [(TEMP, "TemperatureLogitsWarper"), (TOP_K, "TopKLogitsWarper"),
                         (TOP_P, "TopPLogitsWarper")]
    ]  # fmt: skip


@pytest.mark.parametrize(("check", "shortcut", "name"), OFF_LIMITS)
def test_library_and_warpers_are_off_limits(check, shortcut, name):
    # transformers is off limits as a whole: its lazy import may be what trips first
    with pytest.raises(AssertionError, match=f"must be written without .*({name}|transformers)"):
        check(shortcut, seed=0)


def test_sampling_probs_is_graded_with_the_reference_filters(capsys):
    """The pipeline calls the student's own (here wrong) filters: it keeps its points,
    and the student's filters are back in place afterwards."""
    ns = {"torch": torch}
    exec("def apply_temperature(x, t): return x * t\ndef top_k_filter(x, k): return x\n"
         "def top_p_filter(x, p): return x\n"
         "def sampling_probs(x, temperature=1.0, top_k=None, top_p=None):\n"
         "    x = apply_temperature(x, temperature)\n"
         "    x = x if top_k is None else top_k_filter(x, top_k)\n"
         "    return torch.softmax(x if top_p is None else top_p_filter(x, top_p), dim=-1)\n",
         ns)  # fmt: skip
    own = {k: ns[k] for k in ("apply_temperature", "top_k_filter", "top_p_filter")}
    PROBS(ns["sampling_probs"], seed=0)
    assert capsys.readouterr().out.startswith("✔ sampling_probs")
    assert all(ns[k] is v for k, v in own.items())


def test_reference_beam_step_agrees_with_beam_search():
    from llmkit.course.checks.reference.ch04 import beam_search_step as step

    table = 2.0 * torch.randn(6, 6, generator=torch.Generator().manual_seed(0))
    prompt = torch.tensor([1, 4])
    for width in (1, 2, 3):
        seqs, sums = prompt[None], torch.zeros(1)
        for _ in range(5):
            sums, parents, tokens = step(sums, table[seqs][:, -1].log_softmax(-1), width)
            seqs = torch.cat([seqs[parents], tokens[:, None]], dim=1)
        assert torch.equal(seqs[0], beam_search(lambda ids: table[ids], prompt, width, 5))

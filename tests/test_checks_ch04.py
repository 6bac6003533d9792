"""The chapter-04 lab checks: each passes on correct code written from scratch and fails,
with the right hint, on subtly wrong code."""

from __future__ import annotations

import functools
import math

import pytest
import torch
import torch.nn.functional as F

import llmkit.decoding as decoding
from llmkit.course.checks import ch04

NEG_INF = float("-inf")

# ----------------------------------------------------------------------- correct answers


def apply_temperature(logits, temperature):
    return logits / temperature


def top_k_filter(logits, k):
    k = min(k, logits.shape[-1])
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, NEG_INF)


def top_p_filter(logits, p):
    probs = torch.softmax(logits, dim=-1)
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    before = sorted_probs.cumsum(dim=-1) - sorted_probs  # mass of the more probable tokens
    remove_sorted = before >= p
    remove = remove_sorted.scatter(-1, order, remove_sorted)
    return logits.masked_fill(remove, NEG_INF)


def sampling_probs(logits, temperature=1.0, top_k=None, top_p=None):
    logits = apply_temperature(logits, temperature)
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    return torch.softmax(logits, dim=-1)


def beam_search_step(sums, logprobs, beam_width):
    n, vocab = logprobs.shape
    candidates = (sums[:, None] + logprobs).reshape(-1)
    scores, idx = torch.topk(candidates, min(beam_width, n * vocab))
    return scores, idx // vocab, idx % vocab


def beam_search_step_textbook(sums, logprobs, beam_width):
    """The lecture's version: each beam's B best tokens (B**2 candidates), then prune."""
    cands = []
    for i in range(len(sums)):
        top = torch.topk(logprobs[i], min(beam_width, logprobs.shape[1]))
        for lp, v in zip(top.values.tolist(), top.indices.tolist(), strict=True):
            cands.append((float(sums[i]) + lp, i, v))
    cands.sort(key=lambda c: -c[0])
    best = cands[:beam_width]
    return [c[0] for c in best], [c[1] for c in best], [c[2] for c in best]


CORRECT = {
    "check_apply_temperature": apply_temperature,
    "check_top_k_filter": top_k_filter,
    "check_top_p_filter": top_p_filter,
    "check_sampling_probs": sampling_probs,
    "check_beam_search_step": beam_search_step,
}
LIBRARY = {
    "check_apply_temperature": decoding.apply_temperature,
    "check_top_k_filter": decoding.top_k_filter,
    "check_top_p_filter": decoding.top_p_filter,
    "check_sampling_probs": decoding.filter_logits,
    "check_beam_search_step": ch04.reference_beam_search_step,
}

# ----------------------------------------------------------------------- wrong answers


def temperature_multiplies(logits, temperature):
    return logits * temperature


def temperature_softmax(logits, temperature):
    return torch.softmax(logits / temperature, dim=-1)


def temperature_in_place(logits, temperature):
    logits /= temperature
    return logits


def top_k_strict(logits, k):  # `<=`: the k-th largest itself is removed
    k = min(k, logits.shape[-1])
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return (
        logits.masked_fill(logits <= kth, NEG_INF)
        .where(logits > kth, logits)
        .masked_fill(logits <= kth, NEG_INF)
    )


def top_k_exactly_k(logits, k):  # keeps exactly k tokens: ties at the k-th are split
    k = min(k, logits.shape[-1])
    idx = torch.topk(logits, k, dim=-1).indices
    keep = torch.zeros_like(logits, dtype=torch.bool).scatter(-1, idx, True)
    return logits.masked_fill(~keep, NEG_INF)


def top_k_zero(logits, k):
    k = min(k, logits.shape[-1])
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, 0.0)


def top_k_no_clamp(logits, k):  # crashes when k > V
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, NEG_INF)


def top_p_drops_crossing(logits, p):  # removes the token that crosses p
    probs = torch.softmax(logits, dim=-1)
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    remove_sorted = sorted_probs.cumsum(dim=-1) > p
    remove_sorted[..., 0] = False
    remove = remove_sorted.scatter(-1, order, remove_sorted)
    return logits.masked_fill(remove, NEG_INF)


def top_p_one_too_many(logits, p):  # shifts the mask by two instead of one
    probs = torch.softmax(logits, dim=-1)
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    remove_sorted = sorted_probs.cumsum(dim=-1) >= p
    remove_sorted[..., 1:] = remove_sorted[..., :-1].clone()
    remove_sorted[..., 1:] = remove_sorted[..., :-1].clone()
    remove_sorted[..., :2] = False
    remove = remove_sorted.scatter(-1, order, remove_sorted)
    return logits.masked_fill(remove, NEG_INF)


def top_p_sorted_mask(logits, p):  # forgets to map the sorted mask back
    probs = torch.softmax(logits, dim=-1)
    sorted_probs, _ = probs.sort(dim=-1, descending=True)
    remove = (sorted_probs.cumsum(dim=-1) - sorted_probs) >= p
    return logits.masked_fill(remove, NEG_INF)


def top_p_on_logits(logits, p):  # cumulative sum of logits, not probabilities
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    remove_sorted = (sorted_logits.cumsum(dim=-1) - sorted_logits) >= p
    remove = remove_sorted.scatter(-1, order, remove_sorted)
    return logits.masked_fill(remove, NEG_INF)


def sampling_temperature_last(logits, temperature=1.0, top_k=None, top_p=None):
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    return torch.softmax(logits / temperature, dim=-1)


def sampling_top_p_first(logits, temperature=1.0, top_k=None, top_p=None):
    logits = logits / temperature
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    return torch.softmax(logits, dim=-1)


def sampling_returns_logits(logits, temperature=1.0, top_k=None, top_p=None):
    logits = logits / temperature
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    return logits


def beam_forgets_sums(sums, logprobs, beam_width):
    n, vocab = logprobs.shape
    scores, idx = torch.topk(logprobs.reshape(-1), min(beam_width, n * vocab))
    return scores, idx // vocab, idx % vocab


def beam_swapped(sums, logprobs, beam_width):
    scores, parents, tokens = beam_search_step(sums, logprobs, beam_width)
    return scores, tokens, parents


def beam_divides_by_n(sums, logprobs, beam_width):
    n, vocab = logprobs.shape
    candidates = (sums[:, None] + logprobs).reshape(-1)
    scores, idx = torch.topk(candidates, min(beam_width, n * vocab))
    return scores, idx // n, idx % n


def beam_unsorted(sums, logprobs, beam_width):
    scores, parents, tokens = beam_search_step(sums, logprobs, beam_width)
    order = torch.argsort(parents * 1000 + tokens)
    return scores[order], parents[order], tokens[order]


def beam_per_beam(sums, logprobs, beam_width):  # each beam keeps its share of places
    n, vocab = logprobs.shape
    per = math.ceil(beam_width / n)
    cands = []
    for i in range(n):
        top = torch.topk(logprobs[i], min(per, vocab))
        for lp, v in zip(top.values.tolist(), top.indices.tolist(), strict=True):
            cands.append((float(sums[i]) + lp, i, v))
    cands.sort(key=lambda c: -c[0])
    best = cands[: min(beam_width, n * vocab)]
    return (
        torch.tensor([c[0] for c in best]),
        torch.tensor([c[1] for c in best]),
        torch.tensor([c[2] for c in best]),
    )


def _not_implemented(*args, **kwargs):
    raise NotImplementedError("exercise")


# ----------------------------------------------------------------------- tests


@pytest.mark.parametrize("check", sorted(CORRECT))
@pytest.mark.parametrize("seed", [None, 0, 1, 2])
def test_checks_pass_on_correct_code(check, seed, capsys):
    getattr(ch04, check)(CORRECT[check], seed=seed)
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and out.startswith("✔ ") and "25 random cases" in out


@pytest.mark.parametrize("seed", range(10))
def test_checks_pass_on_many_seeds(seed, capsys):
    """No random input of any seed lands on an ambiguous boundary."""
    for check, fn in CORRECT.items():
        getattr(ch04, check)(fn, cases=40, seed=seed)
    ch04.check_beam_search_step(beam_search_step_textbook, seed=seed)
    assert capsys.readouterr().out.count("✔") == 6


def test_check_passes_on_the_textbook_b_squared_beam_step(capsys):
    ch04.check_beam_search_step(beam_search_step_textbook, seed=0)
    assert capsys.readouterr().out.startswith("✔ beam_search_step")


@pytest.mark.parametrize("check", sorted(CORRECT))
def test_checks_refuse_llmkits_own_function(check, capsys):
    fn = LIBRARY[check]
    name = check.removeprefix("check_")
    for submitted in (fn, functools.partial(fn), functools.wraps(fn)(lambda *a, **k: fn(*a, **k))):
        with pytest.raises(AssertionError, match=f"^{name}: this is llmkit's own function"):
            getattr(ch04, check)(submitted, seed=0)
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize(
    ("check", "wrong", "hint"),
    [
        ("check_apply_temperature", temperature_multiplies, "multiplied"),
        ("check_apply_temperature", temperature_softmax, "not probabilities"),
        ("check_apply_temperature", lambda logits, t: None, "return"),
        ("check_top_k_filter", top_k_strict, "strictly smaller"),
        ("check_top_k_filter", top_k_exactly_k, "ties are all kept"),
        ("check_top_k_filter", top_k_zero, "not to 0"),
        ("check_top_p_filter", top_p_drops_crossing, "crosses p"),
        ("check_top_p_filter", top_p_one_too_many, "one token too many"),
        ("check_top_p_filter", top_p_sorted_mask, "map the sorted positions"),
        ("check_top_p_filter", top_p_on_logits, "hint"),
        ("check_sampling_probs", sampling_temperature_last, "temperature first"),
        ("check_sampling_probs", sampling_top_p_first, "top-k first"),
        ("check_sampling_probs", sampling_returns_logits, "return probabilities"),
        ("check_beam_search_step", beam_forgets_sums, "running score"),
        ("check_beam_search_step", beam_swapped, "swapped"),
        ("check_beam_search_step", beam_divides_by_n, "c // V"),
        ("check_beam_search_step", beam_unsorted, "best first"),
        ("check_beam_search_step", beam_per_beam, "all beams together"),
    ],
)
@pytest.mark.parametrize("seed", [None, 0])
def test_checks_fail_on_wrong_code(check, wrong, hint, seed, capsys):
    with pytest.raises(AssertionError, match=hint) as info:
        getattr(ch04, check)(wrong, seed=seed)
    message = str(info.value)
    assert "hint:" in message
    if "wrong result" in message:
        assert "expected" in message and "got" in message
    assert capsys.readouterr().out == ""


def test_top_k_crash_for_k_above_vocab_is_reported():
    with pytest.raises(AssertionError, match="top_k_filter: your function raised"):
        ch04.check_top_k_filter(top_k_no_clamp, seed=0)


def test_checks_refuse_code_that_modifies_its_input():
    with pytest.raises(AssertionError, match="modified its input"):
        ch04.check_apply_temperature(temperature_in_place, seed=0)

    def top_k_in_place(logits, k):
        out = top_k_filter(logits, k)
        logits.copy_(out)
        return out

    with pytest.raises(AssertionError, match="modified its input"):
        ch04.check_top_k_filter(top_k_in_place, seed=0)


@pytest.mark.parametrize("check", sorted(CORRECT))
def test_checks_let_not_implemented_through(check):
    with pytest.raises(NotImplementedError):
        getattr(ch04, check)(_not_implemented)


def test_wrong_shapes_get_a_hint():
    with pytest.raises(AssertionError, match="shape of the logits"):
        ch04.check_top_k_filter(lambda logits, k: top_k_filter(logits, k)[..., :-1], seed=0)
    with pytest.raises(AssertionError, match="three"):
        ch04.check_beam_search_step(lambda s, lp, b: beam_search_step(s, lp, b)[:2], seed=0)
    with pytest.raises(AssertionError, match=r"min\(beam_width, n \* V\)"):
        ch04.check_beam_search_step(
            lambda s, lp, b: tuple(t[:1] for t in beam_search_step(s, lp, b)), seed=0
        )


def test_sampling_check_grades_the_pipeline_with_the_reference_filters(capsys):
    """A student's pipeline calls their own (here wrong) filters: the pipeline keeps its
    points, and their filters are back in place afterwards."""
    namespace: dict = {"__name__": "__main__", "torch": torch}
    exec(
        "def apply_temperature(logits, temperature):\n"
        "    return logits * temperature  # wrong\n\n"
        "def top_k_filter(logits, k):\n"
        "    return logits  # wrong\n\n"
        "def top_p_filter(logits, p):\n"
        "    return logits  # wrong\n\n"
        "def sampling_probs(logits, temperature=1.0, top_k=None, top_p=None):\n"
        "    logits = apply_temperature(logits, temperature)\n"
        "    if top_k is not None:\n"
        "        logits = top_k_filter(logits, top_k)\n"
        "    if top_p is not None:\n"
        "        logits = top_p_filter(logits, top_p)\n"
        "    return torch.softmax(logits, dim=-1)\n",
        namespace,
    )
    own = {k: namespace[k] for k in ("apply_temperature", "top_k_filter", "top_p_filter")}
    ch04.check_sampling_probs(namespace["sampling_probs"], seed=0)
    assert capsys.readouterr().out.startswith("✔ sampling_probs: 25 random cases")
    assert all(namespace[k] is v for k, v in own.items())
    with pytest.raises(AssertionError, match="top_k_filter: wrong result"):
        ch04.check_top_k_filter(own["top_k_filter"], seed=0)


def test_top_p_check_accepts_any_split_of_tied_logits(capsys):
    """Tied logits at the boundary may be kept in any order (as torch.sort decides)."""

    def reversed_ties(logits, p):
        flipped = top_p_filter(logits.flip(-1), p).flip(-1)  # ties split the other way
        return flipped

    ch04.check_top_p_filter(reversed_ties, seed=0)
    assert capsys.readouterr().out.startswith("✔ top_p_filter")


def test_fixed_top_p_cases_are_away_from_the_boundary():
    # the hand-made cases keep the same margin as the random ones
    quarter = torch.tensor([0.5, 0.3, 0.15, 0.05]).log()
    for p in (0.7, 0.45, 0.81, 1.0):
        assert ch04._nucleus_margin(quarter, p) > ch04._MARGIN
    assert ch04._nucleus_margin(quarter, 0.5) < ch04._MARGIN  # 0.5 would be ambiguous


def test_reference_beam_step_agrees_with_beam_search():
    """Beam search built from the reference step finds the library's best sequence."""
    torch.manual_seed(0)
    table = 2.0 * torch.randn(6, 6)

    def model(ids):
        return table[ids]

    prompt = torch.tensor([1, 4])
    for width in (1, 2, 3):
        seqs, sums = prompt[None], torch.zeros(1)
        for _ in range(5):
            logprobs = F.log_softmax(model(seqs)[:, -1], dim=-1)
            sums, parents, tokens = ch04.reference_beam_search_step(sums, logprobs, width)
            seqs = torch.cat([seqs[parents], tokens[:, None]], dim=1)
        best = decoding.beam_search(model, prompt, width, 5)
        assert torch.equal(seqs[0], best)


def test_check_seed_comes_from_the_environment(monkeypatch):
    seen: list = []

    def spy(logits, k):
        seen.append((logits.tolist(), k))
        return top_k_filter(logits, k)

    monkeypatch.setenv("LLMKIT_CHECK_SEED", "5")
    ch04.check_top_k_filter(spy)
    first, seen[:] = list(seen), []
    ch04.check_top_k_filter(spy, seed=5)
    assert seen == first
    seen.clear()
    ch04.check_top_k_filter(spy, seed=6)
    assert seen != first


def test_too_few_cases_is_an_error():
    with pytest.raises(ValueError, match="cases must be"):
        ch04.check_top_p_filter(top_p_filter, cases=2)

"""Tests of llmkit.decoding (chapter 04).

The references are Hugging Face ``transformers``' logits warpers and ``generate`` on
randomly initialised tiny ``GPT2LMHeadModel``s (no download; ``transformers`` is a
test-only dependency). The models are wrapped in a small adapter that speaks the
decoding protocol (``model(ids) -> logits``, ``new_cache()``,
``forward_with_cache(ids, cache)``, ``cache.reorder(indices)``), so these tests do not
depend on ``llmkit.gpt``.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from llmkit.bigram import BigramLM
from llmkit.decoding import (
    STRATEGIES,
    Hypothesis,
    apply_temperature,
    beam_search,
    exhaustive_search,
    filter_logits,
    generate,
    greedy,
    sample,
    sequence_logprob,
    top_k_filter,
    top_p_filter,
)

NEG_INF = float("-inf")


def _transformers() -> Any:
    return pytest.importorskip("transformers")


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Any:
    """Tiny models: intra-op threads only add overhead, and on a busy 2-core machine
    they made this module 3-4x slower. Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class HFCache:
    """Wraps Hugging Face's ``DynamicCache`` (``reorder_cache`` works in place)."""

    def __init__(self) -> None:
        self.past: Any = None

    def reorder(self, indices: torch.Tensor) -> None:
        if self.past is not None:
            self.past.reorder_cache(indices)


class HFAdapter:
    """A ``GPT2LMHeadModel`` speaking the decoding protocol; records what it is fed."""

    def __init__(self, hf: Any) -> None:
        self.hf = hf
        self.fed: list[tuple[int, ...]] = []

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        self.fed.append(tuple(ids.shape))
        return self.hf(ids).logits

    def new_cache(self) -> HFCache:
        return HFCache()

    def forward_with_cache(self, ids: torch.Tensor, cache: HFCache) -> tuple[torch.Tensor, HFCache]:
        self.fed.append(tuple(ids.shape))
        out = self.hf(ids, past_key_values=cache.past, use_cache=True)
        cache.past = out.past_key_values
        return out.logits, cache


MODEL_SHAPES = [(16, 16, 2, 2), (9, 24, 1, 3), (24, 8, 3, 1)]


@pytest.fixture(scope="module")
def hf_models(hf_gpt2) -> list[Any]:
    # a large init range: peaked, varied next-token distributions, so that beam search and
    # greedy decoding often disagree
    return [
        hf_gpt2(d, layers, heads, 64, vocab, seed, initializer_range=0.5, pad_token_id=vocab - 1)
        for seed, (vocab, d, layers, heads) in enumerate(MODEL_SHAPES)
    ]


def _prompt(seed: int, vocab: int, length: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1000 + seed)
    return torch.randint(0, vocab - 1, (length,), generator=g)


def _hf_generate(hf: Any, prompt: torch.Tensor, **kwargs: Any) -> Any:
    ids = prompt[None]
    return hf.generate(
        ids, attention_mask=torch.ones_like(ids), pad_token_id=hf.config.pad_token_id, **kwargs
    )


def _probs_model(rows: dict[int, dict[int, float]], vocab: int) -> BigramLM:
    """A bigram "model" from a table of next-token probabilities (missing rows uniform)."""
    table = torch.full((vocab, vocab), 1.0 / vocab)
    for prev, nxt in rows.items():
        table[prev] = 0.0
        for tok, prob in nxt.items():
            table[prev, tok] = prob
    model = BigramLM(vocab)
    with torch.no_grad():
        model.logits.copy_(table.log())
    return model


# --------------------------------------------------------------------------- filters vs HF

LOGIT_KINDS = ("normal", "ties", "few_values", "with_inf")


def _random_logits(seed: int, batch: int, vocab: int, kind: str) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if kind == "normal":
        return torch.randn(batch, vocab, generator=g) * 3
    if kind == "ties":  # many repeated values
        return torch.randint(-3, 4, (batch, vocab), generator=g).float()
    if kind == "few_values":  # two levels: large tie groups at the boundary
        return torch.randint(0, 2, (batch, vocab), generator=g).float() * 2.5
    x = torch.randn(batch, vocab, generator=g)
    x[torch.rand(batch, vocab, generator=g) < 0.3] = NEG_INF
    x[:, 0] = 0.0  # every row keeps a finite entry
    return x


logit_cases = st.tuples(
    st.integers(0, 10**6),
    st.integers(1, 4),
    st.integers(1, 40),
    st.sampled_from(LOGIT_KINDS),
)


@settings(max_examples=150)
@given(logit_cases, st.floats(0.05, 20.0))
def test_temperature_matches_hf(case: tuple, temperature: float) -> None:
    tr = _transformers()
    logits = _random_logits(*case)
    ours = apply_temperature(logits, temperature)
    theirs = tr.TemperatureLogitsWarper(temperature)(None, logits.clone())
    assert torch.equal(ours, theirs)


@settings(max_examples=250)
@given(logit_cases, st.integers(1, 45))
def test_top_k_matches_hf(case: tuple, k: int) -> None:
    tr = _transformers()
    logits = _random_logits(*case)
    ours = top_k_filter(logits, k)
    theirs = tr.TopKLogitsWarper(k)(None, logits.clone())
    assert torch.equal(ours, theirs)
    kept = torch.isfinite(ours).sum(-1)
    finite = torch.isfinite(logits).sum(-1)
    assert bool((kept >= torch.clamp(finite, max=k)).all())  # ties can keep more than k


@settings(max_examples=200)
@given(
    logit_cases,
    st.one_of(st.floats(0.01, 1.0), st.sampled_from([0.1, 0.5, 0.9, 0.95, 1.0])),
    st.integers(1, 3),
)
def test_top_p_matches_hf(case: tuple, p: float, min_keep: int) -> None:
    tr = _transformers()
    logits = _random_logits(*case)
    ours = top_p_filter(logits, p, min_tokens_to_keep=min_keep)
    theirs = tr.TopPLogitsWarper(p, min_tokens_to_keep=min_keep)(None, logits.clone())
    assert torch.equal(ours, theirs)
    # what remains holds at least p of the mass (up to rounding)
    kept_mass = torch.softmax(logits, -1).masked_fill(torch.isinf(ours), 0).sum(-1)
    assert bool((kept_mass >= p - 1e-5).all())


@settings(max_examples=150)
@given(
    logit_cases,
    st.floats(0.2, 3.0),
    st.one_of(st.none(), st.integers(1, 20)),
    st.one_of(st.none(), st.floats(0.05, 1.0)),
)
def test_filter_pipeline_matches_hf(case: tuple, temperature: float, k: Any, p: Any) -> None:
    """temperature, then top-k, then top-p, as Hugging Face composes them."""
    tr = _transformers()
    logits = _random_logits(*case)
    warpers = [tr.TemperatureLogitsWarper(temperature)]
    if k is not None:
        warpers.append(tr.TopKLogitsWarper(k))
    if p is not None and p < 1.0:
        warpers.append(tr.TopPLogitsWarper(p))
    theirs = tr.LogitsProcessorList(warpers)(None, logits.clone())
    assert torch.equal(filter_logits(logits, temperature, k, p), theirs)


def test_filters_hand_worked() -> None:
    x = torch.tensor([1.0, 3.0, 2.0, 3.0, 0.0])
    inf = NEG_INF
    assert torch.equal(top_k_filter(x, 1), torch.tensor([inf, 3.0, inf, 3.0, inf]))
    assert torch.equal(top_k_filter(x, 3), torch.tensor([inf, 3.0, 2.0, 3.0, inf]))
    assert torch.equal(top_k_filter(x, 99), x)
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    # cumulative from the top: 0.5, 0.8, 0.95, 1.0 -- the token that crosses p is kept
    kept = [torch.isfinite(top_p_filter(probs.log(), p)).sum().item() for p in (0.4, 0.7, 0.9)]
    assert kept == [1, 2, 3]
    assert torch.isfinite(top_p_filter(probs.log(), 1.0)).all()
    assert torch.isfinite(top_p_filter(probs.log(), 0.1, min_tokens_to_keep=3)).sum() == 3
    # the input is not modified
    assert torch.equal(x, torch.tensor([1.0, 3.0, 2.0, 3.0, 0.0]))


def test_temperature_limits() -> None:
    logits = torch.tensor([2.0, 1.0, 0.0, NEG_INF])
    cold = torch.softmax(apply_temperature(logits, 1e-3), -1)
    hot = torch.softmax(apply_temperature(logits, 1e4), -1)
    same = torch.softmax(apply_temperature(logits, 1.0), -1)
    assert torch.allclose(cold, torch.tensor([1.0, 0.0, 0.0, 0.0]))
    assert torch.allclose(hot, torch.tensor([1 / 3, 1 / 3, 1 / 3, 0.0]), atol=1e-3)
    assert torch.equal(same, torch.softmax(logits, -1))


def test_filter_errors() -> None:
    x = torch.zeros(2, 5)
    with pytest.raises(ValueError, match="temperature"):
        apply_temperature(x, 0)
    for bad in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="temperature"):
            apply_temperature(x, bad)
    with pytest.raises(ValueError, match="temperature"):
        apply_temperature(x, float("inf"))
    with pytest.raises(TypeError, match="temperature"):
        apply_temperature(x, True)
    with pytest.raises(ValueError, match="k"):
        top_k_filter(x, 0)
    with pytest.raises(TypeError, match="k"):
        top_k_filter(x, 2.0)
    for bad_p in (0, 0.0, -0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="p"):
            top_p_filter(x, bad_p)
    with pytest.raises(ValueError, match="min_tokens_to_keep"):
        top_p_filter(x, 0.5, min_tokens_to_keep=0)
    with pytest.raises(TypeError, match="logits"):
        top_k_filter(torch.zeros(3, dtype=torch.long), 1)
    with pytest.raises(TypeError, match="torch.Tensor"):
        top_p_filter([0.0, 1.0], 0.5)


# --------------------------------------------------------------------------- hand-worked beam

# vocabulary: 0 = <s>, 1 = "a", 2 = "b", 3 = "c"
START, A, B, C = 0, 1, 2, 3
GREEDY_TRAP = {
    START: {A: 0.5, B: 0.4, C: 0.1},
    A: {A: 0.4, B: 0.3, C: 0.3},
    B: {A: 0.05, B: 0.05, C: 0.9},
}


def test_greedy_misses_the_most_probable_sequence_beam_finds_it() -> None:
    model = _probs_model(GREEDY_TRAP, 4)
    prompt = torch.tensor([START])
    # greedy: a (0.5), then a (0.4): p = 0.20
    assert greedy(model, prompt, 2).tolist() == [START, A, A]
    # the most probable two-token continuation is b c: 0.4 * 0.9 = 0.36
    best, logprob = exhaustive_search(model, prompt, 2)
    assert best.tolist() == [START, B, C]
    assert logprob == pytest.approx(math.log(0.36), abs=1e-6)
    # beam search with B = 2 keeps "b" alive after step 1 and finds it
    out, hyps = beam_search(model, prompt, 2, 2, return_all=True)
    assert out.tolist() == [START, B, C]
    assert [h.ids.tolist() for h in hyps] == [[START, B, C], [START, A, A]]
    assert [h.length for h in hyps] == [2, 2]
    assert hyps[0].logprob == pytest.approx(math.log(0.36), abs=1e-6)
    assert hyps[0].score == pytest.approx(math.log(0.36) / 2, abs=1e-6)  # length_penalty 1
    assert hyps[1].logprob == pytest.approx(math.log(0.20), abs=1e-6)
    # B = 1 is greedy
    assert beam_search(model, prompt, 1, 2).tolist() == [START, A, A]
    # sequence_logprob scores any continuation
    seqs = torch.tensor([[START, A, A], [START, B, C], [START, C, A]])
    got = sequence_logprob(model, seqs, 1)
    expected = torch.tensor([0.2, 0.36, 0.1 / 4]).log()
    assert torch.allclose(got, expected, atol=1e-6)
    assert float(sequence_logprob(model, seqs[1], 1)) == pytest.approx(math.log(0.36), abs=1e-6)
    assert float(sequence_logprob(model, seqs[1], 3)) == 0.0


def test_length_normalisation_hand_worked() -> None:
    """An early EOS wins on the raw sum (length_penalty 0); normalising by length lets the
    longer hypothesis win."""
    eos = 3
    model = _probs_model({0: {eos: 0.3, 1: 0.7}, 1: {2: 0.8, eos: 0.2}, 2: {eos: 0.9, 1: 0.1}}, 4)
    prompt = torch.tensor([0])
    # candidates: [eos] p=0.3 (len 1); [1, 2, eos] p=0.7*0.8*0.9=0.504 (len 3); ...
    short = beam_search(model, prompt, 2, 3, length_penalty=0.0, eos_token_id=eos)
    _, hyps = beam_search(
        model, prompt, 2, 3, length_penalty=0.0, eos_token_id=eos, return_all=True
    )
    assert hyps[0].score == pytest.approx(math.log(0.504), abs=1e-6)
    assert short.tolist() == [0, 1, 2, eos]  # 0.504 > 0.3 even unnormalised
    model2 = _probs_model({0: {eos: 0.5, 1: 0.5}, 1: {2: 0.8, eos: 0.2}, 2: {eos: 0.9, 1: 0.1}}, 4)
    # [eos]: log 0.5 = -0.69; [1, 2, eos]: log 0.36 = -1.02 (sum), -0.34 (per token)
    assert beam_search(model2, prompt, 2, 3, length_penalty=0.0, eos_token_id=eos).tolist() == [
        0,
        eos,
    ]
    assert beam_search(model2, prompt, 2, 3, length_penalty=1.0, eos_token_id=eos).tolist() == [
        0,
        1,
        2,
        eos,
    ]


def test_beam_keeps_b_live_beams_and_stops_exactly() -> None:
    """Candidates that end with EOS leave the beam, so each step ranks 2B candidates to keep
    B beams alive; and with length_penalty > 0 a live beam may still win later."""
    eos = 4  # 0 = <s>, 1 = a, 2 = b, 3 = c
    model = _probs_model(
        {0: {eos: 0.5, A: 0.3, B: 0.2}, A: {eos: 1.0}, B: {C: 1.0}, C: {eos: 1.0}}, 5
    )
    best, hyps = beam_search(model, torch.tensor([0]), 2, 3, eos_token_id=eos, return_all=True)
    # [eos]: log 0.5 / 1 = -0.69;  [a, eos]: log 0.3 / 2 = -0.60;  [b, c, eos]: log 0.2 / 3 = -0.54
    assert best.tolist() == [0, B, C, eos]
    assert [h.ids.tolist() for h in hyps] == [[0, B, C, eos], [0, A, eos], [0, eos]]
    assert [h.score for h in hyps] == pytest.approx(
        [math.log(0.2) / 3, math.log(0.3) / 2, math.log(0.5)], abs=1e-6
    )


def test_top_p_exact_boundary() -> None:
    """Uniform over 4 tokens: two of them hold exactly p = 0.5, so exactly two are kept
    (the tail whose cumulative mass is <= 1 - p is removed)."""
    kept = torch.isfinite(top_p_filter(torch.zeros(1, 4), 0.5)).sum().item()
    assert kept == 2
    assert torch.isfinite(top_p_filter(torch.zeros(1, 4), 0.75)).sum().item() == 3


def test_beam_max_new_tokens_zero_and_return_types() -> None:
    model = _probs_model(GREEDY_TRAP, 4)
    prompt = torch.tensor([START, A])
    out, hyps = beam_search(model, prompt, 3, 0, return_all=True)
    assert out.tolist() == [START, A]
    assert len(hyps) == 1 and isinstance(hyps[0], Hypothesis)
    assert hyps[0].ids.tolist() == [START, A]
    assert (hyps[0].logprob, hyps[0].length, hyps[0].score) == (0.0, 0, 0.0)
    assert greedy(model, prompt, 0).tolist() == [START, A]
    assert isinstance(beam_search(model, prompt, 2, 3), torch.Tensor)
    assert beam_search(model, prompt, 2, 3).dtype == torch.long


def test_exhaustive_search_matches_brute_force_and_exact_beam(hf_models: list[Any]) -> None:
    model = HFAdapter(hf_models[1])  # vocab 9
    vocab = hf_models[1].config.vocab_size
    prompt = _prompt(3, vocab, 4)
    continuations = torch.tensor(list(itertools.product(range(vocab), repeat=2)))
    seqs = torch.cat([prompt.expand(len(continuations), -1), continuations], dim=1)
    scores = sequence_logprob(model, seqs, len(prompt))
    best, logprob = exhaustive_search(model, prompt, 2)
    assert torch.equal(best, seqs[scores.argmax()])
    assert logprob == pytest.approx(float(scores.max()), abs=1e-5)
    # with B = V, two steps of beam search see every two-token continuation: exact
    assert torch.equal(beam_search(model, prompt, vocab, 2), best)
    same, zero = exhaustive_search(model, prompt, 0)
    assert torch.equal(same, prompt) and zero == 0.0
    with pytest.raises(ValueError, match="max_sequences"):
        exhaustive_search(model, prompt, 3, max_sequences=100)


# --------------------------------------------------------------------------- vs HF generate


def test_greedy_matches_hf_and_beam_width_one_is_greedy(hf_models: list[Any]) -> None:
    for i, hf in enumerate(hf_models):
        model = HFAdapter(hf)
        prompt = _prompt(i, hf.config.vocab_size, 3 + i)
        theirs = _hf_generate(hf, prompt, do_sample=False, max_new_tokens=10)[0]
        ours = greedy(model, prompt, 10)
        assert torch.equal(ours, theirs)
        assert torch.equal(beam_search(model, prompt, 1, 10), ours)
        batch = torch.stack([prompt, _prompt(i + 7, hf.config.vocab_size, 3 + i)])
        assert torch.equal(greedy(model, batch, 10)[0], ours)  # rows are independent


BEAM_CASES = [
    # (model index, prompt length, B, max_new_tokens, length_penalty, early_stopping)
    (0, 3, 2, 8, 1.0, False),
    (0, 5, 3, 8, 0.0, True),
    (0, 1, 4, 7, 2.0, "never"),
    (1, 4, 2, 8, 1.0, "never"),
    (1, 2, 3, 8, -1.0, False),
    (1, 6, 4, 8, 1.0, True),
    (2, 3, 2, 8, 0.5, True),
    (2, 2, 4, 8, 1.0, "never"),
]


def test_beam_search_matches_hf_without_eos(hf_models: list[Any]) -> None:
    differs_from_greedy = 0
    for case_no, (i, length, width, n, lp, early) in enumerate(BEAM_CASES):
        hf = hf_models[i]
        model = HFAdapter(hf)
        prompt = _prompt(case_no, hf.config.vocab_size, length)
        theirs = _hf_generate(
            hf,
            prompt,
            num_beams=width,
            do_sample=False,
            max_new_tokens=n,
            early_stopping=early,
            length_penalty=lp,
        )[0]
        ours = beam_search(model, prompt, width, n, length_penalty=lp)
        assert torch.equal(ours, theirs), (case_no, ours.tolist(), theirs.tolist())
        differs_from_greedy += not torch.equal(ours, greedy(model, prompt, n))
    assert differs_from_greedy >= 3  # the comparison is not just greedy decoding


EOS_CASES = [
    # (model index, prompt length, B, max_new_tokens, length_penalty)
    (1, 3, 2, 8, 1.0),
    (1, 5, 3, 10, 0.0),
    (1, 2, 4, 8, 2.0),
    (1, 4, 3, 6, -1.0),
    (0, 3, 3, 8, 1.0),
    (0, 2, 4, 10, 0.5),
]


def test_beam_search_with_eos_matches_hf_never_early_stopping(hf_models: list[Any]) -> None:
    """With an EOS token our stopping rule is exact, as HF's ``early_stopping="never"``;
    the best sequence and the top-B scores agree."""
    eos = 1
    lengths = set()
    for case_no, (i, length, width, n, lp) in enumerate(EOS_CASES):
        hf = hf_models[i]
        model = HFAdapter(hf)
        prompt = _prompt(50 + case_no, hf.config.vocab_size, length).clamp(min=2)
        theirs = _hf_generate(
            hf,
            prompt,
            num_beams=width,
            num_return_sequences=width,
            do_sample=False,
            max_new_tokens=n,
            early_stopping="never",
            length_penalty=lp,
            eos_token_id=eos,
            output_scores=True,
            return_dict_in_generate=True,
        )
        generated = theirs.sequences[0, len(prompt) :].tolist()
        if eos in generated:
            generated = generated[: generated.index(eos) + 1]
        best, hyps = beam_search(
            model, prompt, width, n, length_penalty=lp, eos_token_id=eos, return_all=True
        )
        assert best.tolist() == prompt.tolist() + generated, case_no
        ours = torch.tensor([h.score for h in hyps[:width]])
        assert torch.allclose(ours, theirs.sequences_scores, atol=1e-5), case_no
        for h in hyps:  # scores are length-normalised sums of the model's log-probs
            assert h.ids[-1] == eos or h.length == n
            total = float(sequence_logprob(model, h.ids, len(prompt)))
            assert h.logprob == pytest.approx(total, abs=1e-4)
            assert h.score == pytest.approx(total / h.length**lp, abs=1e-4)
        lengths.add(hyps[0].length)
    assert len(lengths) >= 2  # some best hypotheses end early with EOS, some do not


# --------------------------------------------------------------------------- cache


def test_cache_and_recomputation_agree(hf_models: list[Any]) -> None:
    hf = hf_models[0]
    vocab = hf.config.vocab_size
    prompt = _prompt(11, vocab, 4)
    batch = torch.stack([prompt, _prompt(12, vocab, 4)])
    cached, plain = HFAdapter(hf), HFAdapter(hf)
    runs = [
        lambda m, c: greedy(m, batch, 10, use_cache=c),
        lambda m, c: sample(
            m,
            batch,
            10,
            temperature=0.8,
            top_k=8,
            generator=torch.Generator().manual_seed(3),
            use_cache=c,
        ),
        lambda m, c: beam_search(m, prompt, 3, 10, use_cache=c),
        lambda m, c: beam_search(m, prompt, 4, 10, eos_token_id=2, length_penalty=0.5, use_cache=c),
    ]
    for run in runs:
        cached.fed.clear()
        plain.fed.clear()
        assert torch.equal(run(cached, True), run(plain, False))
        # the cached path feeds the prompt once, then one new token per row
        assert cached.fed[0][1] == 4 and all(shape[1] == 1 for shape in cached.fed[1:])
        assert [shape[1] for shape in plain.fed] == list(range(4, 4 + len(plain.fed)))
    assert torch.equal(
        generate(cached, batch, 6, "beam", beam_width=2, use_cache=True),
        generate(plain, batch, 6, "beam", beam_width=2, use_cache=False),
    )


class PairModel:
    """Logits depend on the previous *and* the current token; the cache holds the last
    token of each row, and ``reorder`` returns a new cache (the functional style). A
    wrong reorder changes the logits, so cache and recomputation would disagree."""

    def __init__(self, vocab: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.table = torch.randn(vocab, vocab, vocab, generator=g) * 2

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        prev = torch.cat([torch.zeros_like(ids[:, :1]), ids[:, :-1]], dim=1)
        return self.table[prev, ids]

    def new_cache(self) -> dict:
        return {"last": None}

    def forward_with_cache(self, ids: torch.Tensor, cache: dict) -> tuple[torch.Tensor, Any]:
        first = torch.zeros_like(ids[:, :1]) if cache["last"] is None else cache["last"][:, None]
        prev = torch.cat([first, ids[:, :-1]], dim=1)
        return self.table[prev, ids], _PairCache(ids[:, -1])


class _PairCache(dict):
    def __init__(self, last: torch.Tensor) -> None:
        super().__init__(last=last)

    def reorder(self, indices: torch.Tensor) -> _PairCache:
        return _PairCache(self["last"][indices])


def test_functional_cache_reorder() -> None:
    model = PairModel(7, seed=0)
    for seed in range(4):
        prompt = _prompt(seed, 7, 3)
        for width in (2, 3, 5):
            a = beam_search(model, prompt, width, 8, eos_token_id=6, use_cache=True)
            b = beam_search(model, prompt, width, 8, eos_token_id=6, use_cache=False)
            assert torch.equal(a, b)


def test_beam_search_needs_a_reorderable_cache() -> None:
    class NoReorder(PairModel):
        def forward_with_cache(self, ids: torch.Tensor, cache: dict) -> tuple[torch.Tensor, Any]:
            logits, new = super().forward_with_cache(ids, cache)
            return logits, {"last": new["last"]}

    model = NoReorder(5, seed=1)
    with pytest.raises(TypeError, match="reorder"):
        beam_search(model, torch.tensor([1, 2]), 2, 3)
    assert beam_search(model, torch.tensor([1, 2]), 2, 3, use_cache=False).shape == (5,)


# --------------------------------------------------------------------------- sampling


def test_sampling_is_reproducible_with_a_generator() -> None:
    model = PairModel(24, seed=2)
    prompt = torch.stack([_prompt(5, 24, 3), _prompt(6, 24, 3)])

    def draw(seed: int, **kw: Any) -> torch.Tensor:
        return sample(model, prompt, 15, generator=torch.Generator().manual_seed(seed), **kw)

    for kw in ({}, {"temperature": 0.7}, {"top_k": 5}, {"top_p": 0.9, "temperature": 1.5}):
        assert torch.equal(draw(0, **kw), draw(0, **kw))
        assert not torch.equal(draw(0, **kw), draw(1, **kw))
    # the generator's state advances: two draws in a row differ, a reseed repeats them
    g = torch.Generator().manual_seed(4)
    first, second = sample(model, prompt, 15, generator=g), sample(model, prompt, 15, generator=g)
    assert not torch.equal(first, second)
    assert torch.equal(first, draw(4))


def test_sampling_matches_hf_with_the_global_seed(hf_models: list[Any]) -> None:
    """generator=None draws from torch's global RNG exactly as HF's generate does."""
    hf = hf_models[0]
    model = HFAdapter(hf)
    prompt = _prompt(8, 16, 4)
    settings_ = [
        {"temperature": 1.0, "top_k": 0, "top_p": 1.0},
        {"temperature": 0.7, "top_k": 5, "top_p": 1.0},
        {"temperature": 1.3, "top_k": 0, "top_p": 0.8},
        {"temperature": 0.9, "top_k": 6, "top_p": 0.9},
    ]
    for seed, kw in enumerate(settings_):
        torch.manual_seed(seed)
        theirs = _hf_generate(hf, prompt, do_sample=True, max_new_tokens=12, **kw)[0]
        torch.manual_seed(seed)
        ours = sample(
            model,
            prompt,
            12,
            temperature=kw["temperature"],
            top_k=kw["top_k"] or None,
            top_p=kw["top_p"],
        )
        assert torch.equal(ours, theirs), kw


def test_sampling_limits_reduce_to_greedy() -> None:
    model = PairModel(16, seed=3)
    prompt = torch.stack([_prompt(1, 16, 3), _prompt(2, 16, 3)])
    expected = greedy(model, prompt, 10)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(sample(model, prompt, 10, top_k=1, generator=g), expected)
    assert torch.equal(sample(model, prompt, 10, temperature=1e-4, generator=g), expected)
    assert torch.equal(sample(model, prompt, 10, top_p=1e-6, generator=g), expected)


def test_sampling_follows_the_filtered_distribution() -> None:
    """From a fixed first-step distribution, top-k / top-p never emit removed tokens and
    the empirical frequencies match the renormalised probabilities."""
    probs = {A: 0.5, B: 0.3, C: 0.2}
    model = _probs_model({START: probs}, 4)
    prompt = torch.full((4000, 1), START)
    g = torch.Generator().manual_seed(0)
    counts = torch.bincount(sample(model, prompt, 1, generator=g)[:, 1], minlength=4)
    assert counts[START] == 0
    assert torch.allclose(counts[1:] / 4000.0, torch.tensor([0.5, 0.3, 0.2]), atol=0.03)
    counts = torch.bincount(sample(model, prompt, 1, top_k=2, generator=g)[:, 1], minlength=4)
    assert counts[C] == 0 and counts[A] / 4000.0 == pytest.approx(0.5 / 0.8, abs=0.03)
    counts = torch.bincount(sample(model, prompt, 1, top_p=0.45, generator=g)[:, 1], minlength=4)
    assert counts[A] == 4000  # p(a) = 0.5 alone reaches p = 0.45


# --------------------------------------------------------------------------- EOS, generate, errors


def test_eos_padding_and_early_stop() -> None:
    eos = 3
    # row starting at 1 goes 1 -> 2 -> eos; row starting at 0 loops 0 -> 0
    model = _probs_model({0: {0: 0.9, 1: 0.1}, 1: {2: 1.0}, 2: {eos: 1.0}, eos: {0: 1.0}}, 4)
    out = greedy(model, torch.tensor([[1], [0]]), 6, eos_token_id=eos)
    assert out.tolist() == [[1, 2, eos, eos, eos, eos, eos], [0, 0, 0, 0, 0, 0, 0]]
    out = greedy(model, torch.tensor([[1], [2]]), 6, eos_token_id=eos)
    assert out.tolist() == [[1, 2, eos], [2, eos, eos]]  # stops once every row finished
    assert greedy(model, torch.tensor([1]), 6, eos_token_id=eos).tolist() == [1, 2, eos]
    g = torch.Generator().manual_seed(0)
    assert sample(model, torch.tensor([1]), 6, eos_token_id=eos, generator=g).tolist() == [1, 2, 3]
    out = generate(model, torch.tensor([[1], [0]]), 4, "beam", beam_width=2, eos_token_id=eos)
    assert out.tolist() == [[1, 2, eos, eos, eos], [0, 0, 0, 0, 0]]


def test_generate_dispatches(hf_models: list[Any]) -> None:
    model = HFAdapter(hf_models[1])
    prompt = _prompt(9, 9, 3)
    batch = torch.stack([prompt, _prompt(10, 9, 3)])
    assert STRATEGIES == ("greedy", "sample", "beam")
    assert torch.equal(generate(model, batch, 7), greedy(model, batch, 7))
    assert torch.equal(
        generate(model, prompt, 7, "sample", top_p=0.9, generator=torch.Generator().manual_seed(2)),
        sample(model, prompt, 7, top_p=0.9, generator=torch.Generator().manual_seed(2)),
    )
    assert torch.equal(generate(model, prompt, 7, "beam"), beam_search(model, prompt, 4, 7))
    beams = generate(model, batch, 7, "beam", beam_width=3, length_penalty=0.0)
    assert beams.shape == (2, 10)
    for row, out in zip(batch, beams, strict=True):
        assert torch.equal(out, beam_search(model, row, 3, 7))


def test_decoding_errors() -> None:
    model = _probs_model(GREEDY_TRAP, 4)
    prompt = torch.tensor([START])
    with pytest.raises(ValueError, match="temperature"):
        generate(model, prompt, 3, "sample", temperature=0)
    with pytest.raises(ValueError, match="top_k"):
        sample(model, prompt, 3, top_k=0)
    with pytest.raises(ValueError, match="top_p"):
        sample(model, prompt, 3, top_p=1.5)
    with pytest.raises(ValueError, match="beam_width"):
        beam_search(model, prompt, 0, 3)
    with pytest.raises(ValueError, match="beam_width"):
        generate(model, prompt, 3, "beam", beam_width=0)
    for fn in (greedy, sample, lambda m, p, n: beam_search(m, p, 2, n)):
        with pytest.raises(ValueError, match="max_new_tokens"):
            fn(model, prompt, -1)
    with pytest.raises(ValueError, match="strategy"):
        generate(model, prompt, 3, "nucleus")
    with pytest.raises(ValueError, match="top_k"):
        generate(model, prompt, 3, "greedy", top_k=5)
    with pytest.raises(ValueError, match="strategy='sample'"):
        generate(model, prompt, 3, "beam", temperature=0.5, generator=torch.Generator())
    with pytest.raises(ValueError, match="beam_width"):
        generate(model, prompt, 3, "sample", beam_width=2)
    with pytest.raises(ValueError, match="prompt_ids"):
        beam_search(model, prompt[None], 2, 3)
    with pytest.raises(ValueError, match="ids"):
        greedy(model, torch.zeros(2, 0, dtype=torch.long), 3)
    with pytest.raises(TypeError, match="ids"):
        greedy(model, torch.zeros(3), 3)
    with pytest.raises(ValueError, match="ids"):
        greedy(model, torch.zeros(1, 1, 1, dtype=torch.long), 3)
    with pytest.raises(ValueError, match="eos_token_id"):
        greedy(model, prompt, 3, eos_token_id=-1)
    with pytest.raises(ValueError, match="length_penalty"):
        beam_search(model, prompt, 2, 3, length_penalty=float("inf"))
    with pytest.raises(ValueError, match="prompt_len"):
        sequence_logprob(model, prompt, 2)
    with pytest.raises(ValueError, match="model"):
        greedy(lambda ids: torch.zeros(ids.shape[0], 4), prompt, 2)

"""Tests of llmkit.bigram and llmkit.metrics (chapter 01)."""

from __future__ import annotations

import math

import pytest
import torch

from llmkit.bigram import BigramLM, bigram_counts, evaluate
from llmkit.metrics import bits_per_token, bytes_per_token, perplexity


def test_bigram_counts_hand_worked():
    # "abab a" with a=0, b=1, ' '=2: ab ba ab b_ _a
    ids = [0, 1, 0, 1, 2, 0]
    expected = torch.tensor(
        [
            [0, 2, 0],
            [1, 0, 1],
            [1, 0, 0],
        ]
    )
    got = bigram_counts(ids, 3)
    assert got.dtype == torch.int64
    assert torch.equal(got, expected)
    assert torch.equal(bigram_counts(torch.tensor(ids), 3), expected)
    assert int(got.sum()) == len(ids) - 1


def test_bigram_counts_short_inputs():
    assert torch.equal(bigram_counts([], 2), torch.zeros(2, 2, dtype=torch.long))
    assert torch.equal(bigram_counts([1], 2), torch.zeros(2, 2, dtype=torch.long))
    assert torch.equal(bigram_counts([0, 0, 0], 1), torch.tensor([[2]]))


def test_bigram_counts_matches_loop():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 7, (500,), generator=g)
    loop = torch.zeros(7, 7, dtype=torch.long)
    for a, b in zip(ids[:-1].tolist(), ids[1:].tolist(), strict=True):
        loop[a, b] += 1
    assert torch.equal(bigram_counts(ids, 7), loop)


def test_bigram_counts_errors():
    with pytest.raises(ValueError, match=r"\[0, 3\).*found 3"):
        bigram_counts([0, 3], 3)
    with pytest.raises(ValueError, match="-1"):
        bigram_counts([0, -1], 3)
    with pytest.raises(ValueError, match="ids"):
        bigram_counts(torch.zeros(2, 2, dtype=torch.long), 3)
    with pytest.raises(TypeError, match="integers"):
        bigram_counts(torch.tensor([0.0, 1.0]), 3)
    with pytest.raises(ValueError, match="vocab_size"):
        bigram_counts([0], 0)


def test_from_counts_rows_are_distributions():
    counts = bigram_counts([0, 1, 0, 1, 2, 0], 4)  # token 3 never occurs
    for alpha in (0.0, 0.5, 1.0):
        model = BigramLM.from_counts(counts, alpha=alpha)
        probs = model.logits.softmax(dim=-1)
        assert torch.allclose(probs.sum(dim=-1), torch.ones(4))
    model = BigramLM.from_counts(counts, alpha=1.0)
    probs = model.logits.exp()  # stored as log-probabilities already
    assert torch.allclose(probs.sum(dim=-1), torch.ones(4))
    # row 0: counts [0, 2, 0, 0] + 1 -> [1, 3, 1, 1] / 6
    assert torch.allclose(probs[0], torch.tensor([1, 3, 1, 1]) / 6)
    # alpha = 0: an empty row falls back to uniform
    mle = BigramLM.from_counts(counts, alpha=0.0).logits.softmax(-1)
    assert torch.allclose(mle[3], torch.full((4,), 0.25))
    assert torch.allclose(mle[0], torch.tensor([0.0, 1.0, 0.0, 0.0]))


def test_from_counts_errors():
    with pytest.raises(ValueError, match="alpha"):
        BigramLM.from_counts(torch.zeros(2, 2), alpha=-1.0)
    with pytest.raises(ValueError, match=r"\(V, V\)"):
        BigramLM.from_counts(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="counts"):
        BigramLM.from_counts(torch.tensor([[1, -1], [0, 0]]))


def test_loss_of_count_model_is_conditional_entropy():
    # a b a b b a : pairs ab ba ab bb ba
    # after a: b (2/2); after b: a (2/3), b (1/3)
    ids = torch.tensor([0, 1, 0, 1, 1, 0])
    model = BigramLM.from_counts(bigram_counts(ids, 2), alpha=0.0)
    h = -(2 * math.log(1.0) + 2 * math.log(2 / 3) + 1 * math.log(1 / 3)) / 5
    loss = model.loss(ids[:-1].unsqueeze(0), ids[1:].unsqueeze(0))
    assert loss.shape == ()
    assert loss.item() == pytest.approx(h, rel=1e-6)
    assert evaluate(model, ids) == pytest.approx(h, rel=1e-6)
    assert evaluate(model, ids, chunk_size=2) == pytest.approx(h, rel=1e-6)


def test_evaluate_matches_loss_on_random_data():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 11, (1000,), generator=g)
    model = BigramLM.from_counts(bigram_counts(ids[:600], 11), alpha=0.5)
    full = model.loss(ids[:-1].unsqueeze(0), ids[1:].unsqueeze(0)).item()
    assert evaluate(model, ids, chunk_size=97) == pytest.approx(full, rel=1e-5)


def test_uniform_model_perplexity_is_vocab_size():
    vocab = 65
    model = BigramLM(vocab)  # zero logits: uniform
    idx = torch.randint(0, vocab, (3, 8), generator=torch.Generator().manual_seed(0))
    targets = torch.randint(0, vocab, (3, 8), generator=torch.Generator().manual_seed(1))
    loss = model.loss(idx, targets)
    assert loss.item() == pytest.approx(math.log(vocab), rel=1e-6)
    assert perplexity(loss) == pytest.approx(vocab, rel=1e-5)
    assert perplexity(math.log(vocab)) == pytest.approx(vocab)


def test_gradient_descent_approaches_counts():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 5, (400,), generator=g)
    model = BigramLM(5)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    x, y = ids[:-1].unsqueeze(0), ids[1:].unsqueeze(0)
    for _ in range(300):
        opt.zero_grad()
        loss = model.loss(x, y)
        loss.backward()
        opt.step()
    best = evaluate(BigramLM.from_counts(bigram_counts(ids, 5), alpha=0.0), ids)
    assert loss.item() == pytest.approx(best, abs=1e-3)


def test_forward_shape_and_errors():
    model = BigramLM(10)
    assert model(torch.zeros(2, 7, dtype=torch.long)).shape == (2, 7, 10)
    with pytest.raises(ValueError, match=r"\(batch, seq\)"):
        model(torch.zeros(7, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        model(torch.full((1, 2), 10))
    with pytest.raises(TypeError, match="integer"):
        model(torch.zeros(1, 2))
    with pytest.raises(ValueError, match="idx"):
        model.loss(torch.zeros(1, 2, dtype=torch.long), torch.zeros(1, 3, dtype=torch.long))


def test_generate_shape_and_determinism():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 6, (300,), generator=g)
    model = BigramLM.from_counts(bigram_counts(ids, 6))
    prompt = torch.tensor([[0, 1], [2, 3], [4, 5]])
    a = model.generate(prompt, 20, generator=torch.Generator().manual_seed(42))
    b = model.generate(prompt, 20, generator=torch.Generator().manual_seed(42))
    c = model.generate(prompt, 20, generator=torch.Generator().manual_seed(43))
    assert a.shape == (3, 22) and a.dtype == torch.long
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(a[:, :2], prompt)
    assert int(a.min()) >= 0 and int(a.max()) < 6
    assert model.generate(prompt, 0).shape == (3, 2)
    with pytest.raises(ValueError, match="max_new_tokens"):
        model.generate(prompt, -1)
    with pytest.raises(ValueError, match="prompt"):
        model.generate(torch.zeros(2, 0, dtype=torch.long), 3)


def test_generate_follows_deterministic_table():
    # alpha = 0 on the cycle 0 -> 1 -> 2 -> 0: sampling has no choice
    model = BigramLM.from_counts(bigram_counts([0, 1, 2, 0, 1, 2, 0], 3), alpha=0.0)
    out = model.generate(torch.tensor([[0]]), 6)
    assert out.tolist() == [[0, 1, 2, 0, 1, 2, 0]]


def test_metrics():
    assert bits_per_token(math.log(2)) == pytest.approx(1.0)
    assert bits_per_token(torch.tensor(math.log(8))) == pytest.approx(3.0)
    assert perplexity(0.0) == 1.0
    assert perplexity(float("inf")) == math.inf
    assert perplexity(1e6) == math.inf
    assert bytes_per_token("héllo", 2) == 3.0
    with pytest.raises(ValueError, match="mean_nll"):
        perplexity(-0.1)
    with pytest.raises(ValueError, match="mean_nll"):
        perplexity(float("nan"))
    with pytest.raises(ValueError, match="scalar"):
        perplexity(torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="n_tokens"):
        bytes_per_token("abc", 0)
    with pytest.raises(TypeError, match="text"):
        bytes_per_token(b"abc", 1)  # type: ignore[arg-type]

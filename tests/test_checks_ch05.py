"""The chapter-05 lab checks: each passes on correct code written from scratch (and on
``llmkit``'s reference, called through a wrapper) and fails, with the right hint, on
plausible wrong code."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import llmkit.bert as bert
from llmkit.course.checks import ch05

# ----------------------------------------------------------------------- correct answers


def _protected(input_ids, special_ids, pad_token_id):
    protected = torch.zeros_like(input_ids, dtype=torch.bool)
    for special in [*special_ids, pad_token_id]:
        if special is not None:
            protected |= input_ids == special
    return protected


def mask_tokens(
    input_ids,
    mask_token_id,
    vocab_size,
    special_ids,
    pad_token_id,
    mlm_probability=0.15,
    generator=None,
    *,
    shares=(0.8, 0.1),  # [MASK], random; the rest stays unchanged
    label="selected",
    protect=True,
    random_ids="vocab",
):
    """BERT's recipe; the keyword-only arguments switch on the usual mistakes."""
    shape = input_ids.shape
    if protect == "specials-only":
        protected = _protected(input_ids, special_ids, None)
    elif protect:
        protected = _protected(input_ids, special_ids, pad_token_id)
    else:
        protected = torch.zeros_like(input_ids, dtype=torch.bool)
    selected = (torch.rand(shape, generator=generator) < mlm_probability) & ~protected
    u = torch.rand(shape, generator=generator)
    to_mask = selected & (u < shares[0])
    to_random = selected & (u >= shares[0]) & (u < shares[0] + shares[1])
    inputs = input_ids.clone()
    inputs[to_mask] = mask_token_id
    if random_ids == "vocab":
        drawn = torch.randint(vocab_size, (int(to_random.sum()),), generator=generator)
    else:  # tokens of the batch, shuffled
        flat = input_ids.reshape(-1)
        drawn = flat[torch.randint(len(flat), (int(to_random.sum()),), generator=generator)]
    inputs[to_random] = drawn
    if label == "selected":
        labels = torch.where(selected, input_ids, -100)
    elif label == "everywhere":
        labels = torch.where(protected, -100, input_ids)
    elif label == "corrupted":
        labels = torch.where(selected, inputs, -100)
    elif label == "changed":
        labels = torch.where(selected & (inputs != input_ids), input_ids, -100)
    return inputs, labels


def mask_tokens_sequential(
    input_ids,
    mask_token_id,
    vocab_size,
    special_ids,
    pad_token_id,
    mlm_probability=0.15,
    generator=None,
):
    """Hugging Face's style: three Bernoulli draws (0.8, then 0.5 of the rest)."""
    probs = torch.full(input_ids.shape, mlm_probability)
    probs[_protected(input_ids, special_ids, pad_token_id)] = 0.0
    selected = torch.bernoulli(probs, generator=generator).bool()
    labels = input_ids.masked_fill(~selected, -100)
    inputs = input_ids.clone()
    masked = torch.bernoulli(torch.full(input_ids.shape, 0.8), generator=generator).bool()
    masked &= selected
    inputs[masked] = mask_token_id
    rnd = torch.bernoulli(torch.full(input_ids.shape, 0.5), generator=generator).bool()
    rnd &= selected & ~masked
    inputs[rnd] = torch.randint(vocab_size, input_ids.shape, generator=generator)[rnd]
    return inputs, labels


def mask_tokens_library(input_ids, mask_token_id, vocab_size, special_ids, pad_token_id, **kw):
    return bert.mask_tokens(
        input_ids,
        mask_token_id=mask_token_id,
        vocab_size=vocab_size,
        special_ids=special_ids,
        pad_token_id=pad_token_id,
        **kw,
    )


class SentenceClassifier(nn.Module):
    def __init__(self, encoder, n_labels):
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(encoder.config.dropout)
        self.classifier = nn.Linear(encoder.config.hidden_size, n_labels)

    def hidden(self, input_ids, attention_mask, token_type_ids):
        return self.encoder(input_ids, attention_mask, token_type_ids)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        hidden = self.hidden(input_ids, attention_mask, token_type_ids)
        pooled = torch.tanh(self.encoder.pooler(hidden[:, 0]))
        return self.classifier(self.dropout(pooled))


class SentenceClassifierFunctional(SentenceClassifier):
    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        h = self.encoder(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        )
        pooled = F.linear(h[:, 0], self.encoder.pooler.weight, self.encoder.pooler.bias).tanh()
        pooled = F.dropout(pooled, self.dropout.p, self.training)
        return pooled @ self.classifier.weight.T + self.classifier.bias


def fine_tune_step(model, batch, optimizer, max_grad_norm=1.0):
    logits = model(batch["input_ids"], batch["attention_mask"])
    loss = F.cross_entropy(logits, batch["labels"])
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    optimizer.zero_grad()
    return loss.item()


def fine_tune_step_by_hand(model, batch, optimizer, max_grad_norm=1.0):
    """Zero first, clip by hand (no 1e-6 in the denominator), keyword call."""
    optimizer.zero_grad()
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**inputs)
    log_probs = logits.log_softmax(-1)
    loss = -log_probs[torch.arange(len(batch["labels"])), batch["labels"]].mean()
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    norm = torch.sqrt(sum((g**2).sum() for g in grads))
    if norm > max_grad_norm:
        for g in grads:
            g.mul_(max_grad_norm / norm)
    optimizer.step()
    return float(loss.detach())


def align_labels(word_ids, word_labels):
    out, previous = [], None
    for w in word_ids:
        out.append(-100 if w is None or w == previous else word_labels[w])
        previous = w
    return out


def align_labels_library(word_ids, word_labels):
    return bert.align_labels(word_ids, word_labels)


CORRECT = {
    "check_mask_tokens": [mask_tokens, mask_tokens_sequential, mask_tokens_library],
    "check_sentence_classifier": [SentenceClassifier, SentenceClassifierFunctional],
    "check_fine_tune_step": [fine_tune_step, fine_tune_step_by_hand],
    "check_align_labels": [align_labels, align_labels_library],
}
LIBRARY = {
    "check_mask_tokens": ("mask_tokens", bert.mask_tokens),
    "check_sentence_classifier": ("SentenceClassifier", bert.BertForSequenceClassification),
    "check_fine_tune_step": ("fine_tune_step", ch05.reference_fine_tune_step),
    "check_align_labels": ("align_labels", bert.align_labels),
}

# ----------------------------------------------------------------------- wrong answers


def mask_in_place(input_ids, *args, **kwargs):
    inputs, labels = mask_tokens(input_ids, *args, **kwargs)
    input_ids.copy_(inputs)
    return inputs, labels


def mask_global_rng(*args, generator=None, **kwargs):
    return mask_tokens(*args, generator=None, **kwargs)


def mask_own_generator(*args, generator=None, **kwargs):
    return mask_tokens(*args, generator=torch.Generator().manual_seed(0), **kwargs)


def mask_fixed_rate(*args, mlm_probability=0.15, **kwargs):
    return mask_tokens(*args, mlm_probability=0.15, **kwargs)


def mask_random_rest(*args, **kwargs):  # 80 % [MASK], then a Bernoulli(0.1) of the rest
    inputs, labels = mask_tokens(*args, shares=(0.8, 0.02), **kwargs)
    return inputs, labels


class NoPooler(SentenceClassifier):
    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        hidden = self.encoder(input_ids, attention_mask, token_type_ids)
        return self.classifier(self.dropout(hidden[:, 0]))


class NoTanh(SentenceClassifier):
    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        hidden = self.encoder(input_ids, attention_mask, token_type_ids)
        return self.classifier(self.dropout(self.encoder.pooler(hidden[:, 0])))


class MeanPooling(SentenceClassifier):
    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        hidden = self.encoder(input_ids, attention_mask, token_type_ids)
        return self.classifier(self.dropout(torch.tanh(self.encoder.pooler(hidden.mean(1)))))


class LastToken(SentenceClassifier):
    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        hidden = self.encoder(input_ids, attention_mask, token_type_ids)
        return self.classifier(self.dropout(torch.tanh(self.encoder.pooler(hidden[:, -1]))))


class NoMask(SentenceClassifier):
    def hidden(self, input_ids, attention_mask, token_type_ids):
        return self.encoder(input_ids, token_type_ids=token_type_ids)


class NoTypes(SentenceClassifier):
    def hidden(self, input_ids, attention_mask, token_type_ids):
        return self.encoder(input_ids, attention_mask)


class UsesPool(SentenceClassifier):
    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        hidden = self.encoder(input_ids, attention_mask, token_type_ids)
        return self.classifier(self.dropout(self.encoder.pool(hidden)))


class NoDropout(SentenceClassifier):
    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        hidden = self.encoder(input_ids, attention_mask, token_type_ids)
        return self.classifier(torch.tanh(self.encoder.pooler(hidden[:, 0])))


class DropoutBeforePooler(SentenceClassifier):
    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        hidden = self.encoder(input_ids, attention_mask, token_type_ids)
        return self.classifier(torch.tanh(self.encoder.pooler(self.dropout(hidden[:, 0]))))


class Probabilities(SentenceClassifier):
    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        return super().forward(input_ids, attention_mask, token_type_ids).softmax(-1)


class RenamedParts(SentenceClassifier):
    def __init__(self, encoder, n_labels):
        super().__init__(encoder, n_labels)
        self.head = self.classifier
        del self.classifier

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        hidden = self.encoder(input_ids, attention_mask, token_type_ids)
        return self.head(self.dropout(torch.tanh(self.encoder.pooler(hidden[:, 0]))))


def _reference_step_body(model, batch, optimizer, max_grad_norm=1.0, **slip):
    # the same steps as ch05.reference_fine_tune_step, defined here so that the check
    # does not recognise (and refuse) the library's function
    logits = model(batch["input_ids"], batch["attention_mask"])
    loss = F.cross_entropy(logits, batch["labels"], reduction=slip.get("reduction", "mean"))
    loss.backward()
    params = [p for p in model.parameters() if p.grad is not None]
    clip = slip.get("clip", "norm")
    limit = slip.get("fixed_norm", max_grad_norm)
    if clip == "norm":
        torch.nn.utils.clip_grad_norm_(params, limit)
    elif clip == "each":
        for p in params:
            torch.nn.utils.clip_grad_norm_([p], limit)
    elif clip == "value":
        torch.nn.utils.clip_grad_value_(params, limit)
    if slip.get("step", True):
        optimizer.step()
    if clip == "after":
        torch.nn.utils.clip_grad_norm_(params, limit)
    if slip.get("zero_grad", True):
        optimizer.zero_grad()
    return loss if slip.get("tensor") else loss.item()


def step_with(**slip):
    return functools.partial(_reference_step_body, **slip)


def align_every_piece(word_ids, word_labels):
    return [-100 if w is None else word_labels[w] for w in word_ids]


def align_last_piece(word_ids, word_labels):
    out = []
    for i, w in enumerate(word_ids):
        nxt = word_ids[i + 1] if i + 1 < len(word_ids) else None
        out.append(-100 if w is None or nxt == w else word_labels[w])
    return out


def align_specials_zero(word_ids, word_labels):
    return [
        0 if w is None else v
        for w, v in zip(word_ids, align_labels(word_ids, word_labels), strict=True)
    ]


def align_counting(word_ids, word_labels):
    out, previous, k = [], None, 0
    for w in word_ids:
        if w is None or w == previous:
            out.append(-100)
        else:
            out.append(word_labels[k])
            k += 1
        previous = w
    return out


def align_drops_specials(word_ids, word_labels):
    return [
        v
        for w, v in zip(word_ids, align_labels(word_ids, word_labels), strict=True)
        if w is not None
    ]


def _not_implemented(*args, **kwargs):
    raise NotImplementedError("exercise")


class NotImplementedClassifier(SentenceClassifier):
    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        raise NotImplementedError("SentenceClassifier")


# ----------------------------------------------------------------------- tests


@pytest.mark.parametrize("check", sorted(CORRECT))
@pytest.mark.parametrize("seed", [None, 0, 1])
def test_checks_pass_on_correct_code(check, seed, capsys):
    for fn in CORRECT[check]:
        getattr(ch05, check)(fn, seed=seed)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(CORRECT[check])
    assert all(line.startswith("✔ ") for line in lines)


@pytest.mark.parametrize("seed", range(2, 8))
def test_mask_tokens_passes_on_many_seeds(seed, capsys):
    """The statistical tolerances leave a correct answer room on every seed."""
    ch05.check_mask_tokens(mask_tokens, seed=seed)
    ch05.check_mask_tokens(mask_tokens_sequential, seed=seed)
    assert capsys.readouterr().out.count("✔ mask_tokens") == 2


@pytest.mark.parametrize("check", sorted(LIBRARY))
def test_checks_refuse_llmkits_own_code(check, capsys):
    name, obj = LIBRARY[check]
    submitted = [obj] if isinstance(obj, type) else [obj, functools.partial(obj)]
    for fn in submitted:
        with pytest.raises(AssertionError, match=f"^{name}: this is llmkit's own function"):
            getattr(ch05, check)(fn, seed=0)
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize(
    ("check", "stub"),
    [
        ("check_mask_tokens", _not_implemented),
        ("check_sentence_classifier", NotImplementedClassifier),
        ("check_fine_tune_step", _not_implemented),
        ("check_align_labels", _not_implemented),
    ],
)
def test_checks_let_not_implemented_through(check, stub):
    with pytest.raises(NotImplementedError):
        getattr(ch05, check)(stub)


def _fails(check, wrong, hint, seed=0):
    with pytest.raises(AssertionError, match=hint) as info:
        getattr(ch05, check)(wrong, seed=seed)
    message = str(info.value)
    assert "hint:" in message and "input:" in message
    return message


@pytest.mark.parametrize(
    ("wrong", "hint"),
    [
        (functools.partial(mask_tokens, protect=False), "never selected"),
        (functools.partial(mask_tokens, protect="specials-only"), "never selected"),
        (functools.partial(mask_tokens, shares=(1.0, 0.0)), "only 80 %"),
        (functools.partial(mask_tokens, shares=(0.1, 0.8)), "swapped"),
        (functools.partial(mask_tokens, shares=(0.8, 0.2)), "80 % become \\[MASK\\]"),
        (mask_random_rest, "80 % become \\[MASK\\]"),
        (functools.partial(mask_tokens, label="everywhere"), "selected tokens only"),
        (functools.partial(mask_tokens, label="corrupted"), "original token"),
        (functools.partial(mask_tokens, label="changed"), "10 % that stay"),
        (functools.partial(mask_tokens, random_ids="batch"), "whole vocabulary"),
        (mask_fixed_rate, "not a fixed 15 %"),
        (mask_global_rng, "generator argument"),
        (mask_own_generator, "the generator you are given"),
        (mask_in_place, "modified input_ids"),
        (lambda *a, **k: mask_tokens(*a, **k)[0], "pair"),
        (lambda *a, **k: None, "return"),
    ],
)
@pytest.mark.parametrize("seed", [None, 0])
def test_mask_tokens_fails_on_wrong_code(wrong, hint, seed, capsys):
    _fails("check_mask_tokens", wrong, hint, seed)
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize(
    ("wrong", "hint"),
    [
        (NoPooler, "through the pooler first"),
        (NoTanh, "ends with tanh"),
        (MeanPooling, "not from an average"),
        (LastToken, "\\[CLS\\] is the first position"),
        (NoMask, "pass attention_mask"),
        (NoTypes, "pass token_type_ids"),
        (UsesPool, "called self.encoder.pool"),
        (NoDropout, "training mode"),
        (DropoutBeforePooler, "training mode"),
        (Probabilities, "not probabilities"),
        (RenamedParts, "keep the __init__"),
    ],
)
@pytest.mark.parametrize("seed", [None, 0])
def test_sentence_classifier_fails_on_wrong_code(wrong, hint, seed, capsys):
    _fails("check_sentence_classifier", wrong, hint, seed)
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize(
    ("wrong", "hint"),
    [
        (step_with(clip="none"), "clip the norm of all gradients together, after backward"),
        (step_with(clip="after"), "clipping after the step changes nothing"),
        # when no parameter's own norm (or no value) exceeds the limit, these two did
        # nothing at all, and the hint for no clipping is the one that fits
        (step_with(clip="each"), "all gradients together"),
        (step_with(clip="value"), "clip_grad_value_|clip_grad_norm_"),
        (step_with(zero_grad=False), "optimizer.zero_grad\\(\\)"),
        (step_with(step=False), "call optimizer.step\\(\\)"),
        (step_with(reduction="sum"), "not their sum"),
        (step_with(tensor=True), "expected a float"),
        (step_with(fixed_norm=1.0), "differ"),
        (lambda model, batch, optimizer, max_grad_norm=1.0: None, "differ"),
    ],
)
@pytest.mark.parametrize("seed", [None, 0])
def test_fine_tune_step_fails_on_wrong_code(wrong, hint, seed, capsys):
    _fails("check_fine_tune_step", wrong, hint, seed)
    assert capsys.readouterr().out == ""


def test_fine_tune_step_without_return_is_named():
    def no_return(model, batch, optimizer, max_grad_norm=1.0):
        _reference_step_body(model, batch, optimizer, max_grad_norm)

    _fails("check_fine_tune_step", no_return, "returned None")


@pytest.mark.parametrize(
    ("wrong", "hint"),
    [
        (align_every_piece, "only the first piece"),
        (align_last_piece, "\\*first\\* piece"),
        (align_specials_zero, "special tokens"),
        (align_counting, "index word_labels with the word id"),
        (align_drops_specials, "one label per token"),
        (lambda word_ids, word_labels: None, "return"),
    ],
)
@pytest.mark.parametrize("seed", [None, 0])
def test_align_labels_fails_on_wrong_code(wrong, hint, seed, capsys):
    _fails("check_align_labels", wrong, hint, seed)
    assert capsys.readouterr().out == ""


def test_align_labels_check_uses_the_real_tokenizer():
    tok = ch05._minilm_tokenizer()
    for words in ch05.SENTENCES:
        word_ids = tok.encode(words, is_pretokenized=True).word_ids
        assert word_ids[0] is None and word_ids[-1] is None
        assert len(word_ids) > len(words) + 2  # some words are split into pieces


def test_check_seed_comes_from_the_environment(monkeypatch):
    seen: list = []

    def spy(word_ids, word_labels):
        seen.append((list(word_ids), list(word_labels)))
        return align_labels(word_ids, word_labels)

    monkeypatch.setenv("LLMKIT_CHECK_SEED", "5")
    ch05.check_align_labels(spy)
    first, seen[:] = list(seen), []
    ch05.check_align_labels(spy, seed=5)
    assert seen == first
    seen.clear()
    ch05.check_align_labels(spy, seed=6)
    assert seen != first


def test_checks_leave_the_global_random_state_alone():
    torch.manual_seed(123)
    state = torch.get_rng_state()
    ch05.check_sentence_classifier(SentenceClassifier, seed=0)
    ch05.check_fine_tune_step(fine_tune_step, seed=0)
    assert torch.equal(torch.get_rng_state(), state)


def test_too_few_cases_is_an_error():
    with pytest.raises(ValueError, match="cases must be"):
        ch05.check_align_labels(align_labels, cases=2)
    with pytest.raises(ValueError, match="cases must be"):
        ch05.check_fine_tune_step(fine_tune_step, cases=1)

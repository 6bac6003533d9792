"""Lab 05's checks: what the generic tests (tests/test_checks.py) cannot cover — each
catalogued slip is named, the off-limits functions and the pool spy cannot be got
round, and the random masking is judged by its recipe, not by one draw."""

from __future__ import annotations

import functools
import types

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import llmkit.bert as bert
from llmkit.course.checks import ch05


def mask_tokens(input_ids, mask_token_id, vocab_size, special_ids, pad_token_id,
                mlm_probability=0.15, generator=None, *, shares=(0.8, 0.1), label="original",
                fixed_p=None, protect=True, global_randint=False):  # fmt: skip
    protected = torch.zeros_like(input_ids, dtype=torch.bool)
    for s in [*special_ids, pad_token_id] if protect else []:
        if s is not None:
            protected |= input_ids == s
    p = fixed_p or mlm_probability
    selected = (torch.rand(input_ids.shape, generator=generator) < p) & ~protected
    u = torch.rand(input_ids.shape, generator=generator)
    inputs = input_ids.clone()
    inputs[selected & (u < shares[0])] = mask_token_id
    swap = selected & (u >= shares[0]) & (u < shares[0] + shares[1])
    g = None if global_randint else generator
    inputs[swap] = torch.randint(vocab_size, (int(swap.sum()),), generator=g)
    if label == "everywhere":
        return inputs, torch.where(protected, -100, input_ids)
    return inputs, torch.where(selected, input_ids if label == "original" else inputs, -100)


def mask_tokens_bernoulli(input_ids, mask_token_id, vocab_size, special_ids, pad_token_id,
                          mlm_probability=0.15, generator=None):  # fmt: skip
    """Hugging Face's way: Bernoulli draws (0.8, then 0.5 of the rest) -- also right."""
    probs = torch.full(input_ids.shape, mlm_probability)
    for s in [*special_ids, pad_token_id]:
        if s is not None:
            probs[input_ids == s] = 0.0
    selected = torch.bernoulli(probs, generator=generator).bool()
    inputs = input_ids.clone()
    masked = torch.bernoulli(torch.full(probs.shape, 0.8), generator=generator).bool() & selected
    inputs[masked] = mask_token_id
    rnd = torch.bernoulli(torch.full(probs.shape, 0.5), generator=generator).bool()
    rnd &= selected & ~masked
    inputs[rnd] = torch.randint(vocab_size, probs.shape, generator=generator)[rnd]
    return inputs, input_ids.masked_fill(~selected, -100)


def mlm_loss(logits, labels, *, divide="masked", axis=-1):
    keep = labels != -100
    logp = logits.log_softmax(axis)
    nll = -logp.gather(-1, labels.clamp(min=0)[..., None])[..., 0]
    if divide == "all":
        return (nll * keep).sum() / keep.numel()
    return nll[keep].sum() if divide == "sum" else nll[keep].mean()


class SentenceClassifier(nn.Module):
    use_mask, use_dropout = True, True  # switched off by the slips below

    def __init__(self, encoder, n_labels):
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(encoder.config.dropout)
        self.classifier = nn.Linear(encoder.config.hidden_size, n_labels)

    def pool(self, hidden):
        return torch.tanh(self.encoder.pooler(hidden[:, 0]))

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        mask = attention_mask if self.use_mask else None
        pooled = self.pool(self.encoder(input_ids, mask, token_type_ids))
        return self.classifier(self.dropout(pooled) if self.use_dropout else pooled)


def align_labels(word_ids, word_labels, *, first=True, special=-100):
    out = []
    for i, w in enumerate(word_ids):
        j = i - 1 if first else i + 1  # the piece that decides whether w is labelled here
        later = 0 <= j < len(word_ids) and word_ids[j] == w
        out.append(special if w is None else -100 if later else word_labels[w])
    return out


def align_counting(word_ids, word_labels):
    out, seen = [], 0
    for i, w in enumerate(word_ids):
        first = w is not None and (i == 0 or word_ids[i - 1] != w)
        out.append(word_labels[seen] if first else -100)
        seen += first
    return out


def _fails(check, fn, match):
    with pytest.raises(AssertionError, match=match) as info:
        getattr(ch05, f"check_{check}")(fn, seed=0)
    assert "\n  input: " in str(info.value)


def _classifier(**methods):
    return type("SentenceClassifier", (SentenceClassifier,), methods)


def test_a_correct_mask_tokens_of_another_design_passes(capsys):
    for seed in range(3):
        ch05.check_mask_tokens(mask_tokens_bernoulli, seed=seed)
    assert capsys.readouterr().out.count("✔ mask_tokens") == 3


def _flat(loss):
    return lambda logits, labels: loss(logits.flatten(0, 1), labels.flatten())


@pytest.mark.parametrize(("check", "wrong", "hint"), [
    ("mask_tokens", functools.partial(mask_tokens, shares=(1.0, 0.0)), "only 80 %"),
    ("mask_tokens", functools.partial(mask_tokens, label="everywhere"), "selected tokens only"),
    ("mask_tokens", functools.partial(mask_tokens, label="corrupted"), "original token"),
    ("mask_tokens", functools.partial(mask_tokens, fixed_p=0.15), "not a fixed 15 %"),
    ("mlm_loss", functools.partial(mlm_loss, divide="all"), "not by all b \\* t"),
    ("mlm_loss", lambda lg, lb: mlm_loss(lg, lb.clamp(min=0)), "not token 0"),
    ("mlm_loss", functools.partial(mlm_loss, divide="sum"), "not their sum"),
    ("mlm_loss", functools.partial(mlm_loss, axis=1), "dim=-1"),
    ("sentence_classifier", _classifier(pool=lambda self, h: h[:, 0]), "through the pooler"),
    ("sentence_classifier", _classifier(pool=lambda self, h: self.encoder.pooler(
        h.mean(1)).tanh()), "not from an\\s+average"),
    ("sentence_classifier", _classifier(use_mask=False), "pass attention_mask on"),
    ("sentence_classifier", _classifier(use_dropout=False), "right in evaluation mode, wrong"),
    ("align_labels", lambda w, lb: [-100 if i is None else lb[i] for i in w], "only the first"),
    ("align_labels", functools.partial(align_labels, first=False), "\\*first\\* piece"),
    ("align_labels", functools.partial(align_labels, special=0), "get the label -100"),
    ("align_labels", align_counting, "index word_labels with the word id"),
])  # fmt: skip
def test_each_slip_fails_with_its_hint(check, wrong, hint):
    _fails(check, wrong, f"(?s)hint: .*{hint}")


@pytest.mark.parametrize(
    ("wrong", "says"),
    [
        (functools.partial(mask_tokens, protect=False), "never selected"),
        (functools.partial(mask_tokens, shares=(0.1, 0.8)), "80 %, 10 %, 10 %"),
        (functools.partial(mask_tokens, global_randint=True), "global random generator"),
        (lambda *a, generator=None, **k: mask_tokens(*a, **k), "did not draw from the generator"),
    ],
)
def test_masking_problems_are_said(wrong, says):
    _fails("mask_tokens", wrong, says)


@pytest.mark.parametrize(("check", "shortcut", "label"), [
    ("mlm_loss", _flat(F.cross_entropy), "cross_entropy"),
    ("mlm_loss", _flat(lambda x, y: F.nll_loss(x.log_softmax(-1), y)), "nll_loss"),
    ("mlm_loss", _flat(nn.CrossEntropyLoss()), "CrossEntropyLoss|cross_entropy"),
    ("mlm_loss", _flat(torch._C._nn.cross_entropy_loss), "cross_entropy_loss"),
    ("mlm_loss", _flat(torch.ops.aten.cross_entropy_loss), "cross_entropy_loss"),
    ("mlm_loss", _flat(lambda x, y: torch.ops.aten.nll_loss_forward(x.log_softmax(-1), y, None,
                                                                   1, -100)[0]), "nll_loss"),
    ("mask_tokens", lambda ids, *a, **k: bert.mask_tokens(ids, **k), "llmkit.bert.mask_tokens"),
    ("align_labels", bert.align_labels, "llmkit.bert.align_labels"),
])  # fmt: skip
def test_off_limits_functions_fail(check, shortcut, label):
    _fails(check, shortcut, f"must be written without .*{label}")


@pytest.mark.parametrize("pool", [
    lambda self, h: self.encoder.pool(h),  # the instance's method
    lambda self, h: bert.BertModel.pool(self.encoder, h),  # the class's: the old spy's hole
    lambda self, h: type(self.encoder).pool(self.encoder, h),
    lambda self, h: functools.partial(bert.BertModel.pool, self.encoder)(h),
    lambda self, h: types.FunctionType(bert.BertModel.pool.__code__, {"torch": torch})(
        self.encoder, h),  # a copy of the function
])  # fmt: skip
def test_the_pool_tripwire_cannot_be_got_round(pool):
    _fails("sentence_classifier", _classifier(pool=pool), "must be written without .*pool")


def test_the_library_classifier_is_off_limits():
    def forward(self, x, m=None, t=None):
        ref = bert.BertForSequenceClassification(self.encoder.config, 2, encoder=self.encoder)
        ref.classifier, ref.dropout = self.classifier, self.dropout
        return ref(x, m, t)

    _fails("sentence_classifier", _classifier(forward=forward), "BertForSequenceClassification")


def test_a_detached_loss_fails():
    _fails(
        "mlm_loss",
        lambda lg, lb: torch.tensor(mlm_loss(lg, lb).item(), dtype=lg.dtype),
        "cut off from the logits",
    )


def test_checks_leave_torchs_random_state_alone():
    torch.manual_seed(123)
    state = torch.get_rng_state()
    ch05.check_mask_tokens(mask_tokens, seed=0)
    ch05.check_sentence_classifier(SentenceClassifier, seed=0)
    assert torch.equal(torch.get_rng_state(), state)


def test_the_minilm_word_ids_are_the_tokenizers():
    tokenizer = bert._read_tokenizer(bert.minilm_path())
    for text, word_ids in ch05.MINILM_WORD_IDS.items():
        assert tokenizer.encode(text.split(), is_pretokenized=True).word_ids == word_ids


def test_transformers_masking_is_off_limits():
    collator = pytest.importorskip("transformers.data.data_collator")

    def hf(ids, *args, **kwargs):
        return collator.DataCollatorForLanguageModeling.torch_mask_tokens(None, ids.clone())

    _fails("mask_tokens", hf, "must be written without .*DataCollatorForLanguageModeling")

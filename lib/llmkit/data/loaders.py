"""Loaders: one function per data set, returning plain Python objects.

Every loader gets its files through :func:`llmkit.data.path` (mirror, cache or download,
always sha256-verified), parses them with the standard library only, and returns lists,
dicts, tuples and strings. Splits that the sources do not provide are made here,
deterministically (by position, or with a fixed-seed ``random.Random``), and documented in
each docstring, so every reader and every CI run sees the same examples.
"""

from __future__ import annotations

import gzip
import json
import random
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, overload

from .fetch import path

__all__ = [
    "SENTENCE_POLARITY_SEED",
    "POEM_SENTIMENT_LABELS",
    "WNUT17_LABELS",
    "HH_RLHF_SUBSETS",
    "LDNOOBW_VERSIONS",
    "UD_SPLITS",
    "Token",
    "Sentence",
    "parse_conllu",
    "load_tinyshakespeare",
    "load_sentence_polarity",
    "load_hh_rlhf",
    "load_tatoeba_fra_eng",
    "load_wnut17",
    "load_ud_ewt",
    "load_poem_sentiment",
    "load_instruction_data",
    "split_instruction_data",
    "INSTRUCTION_SPLIT",
    "load_ldnoobw",
    "ENGLISH_TEXT_SEED",
    "ENGLISH_TEXT_SOURCES",
    "UD_EWT_GROUP",
    "ENGLISH_TEXT_FILES",
    "ENGLISH_TEXT_RULE",
    "load_english_text",
]

SENTENCE_POLARITY_SEED = 1234
"""Default seed of the sentence-polarity split."""

POEM_SENTIMENT_LABELS: dict[int, str] = {
    -1: "negative",
    0: "no_impact",
    1: "positive",
    2: "mixed",
}
"""Poem-sentiment label values as they appear in the files, and their names."""

WNUT17_LABELS: tuple[str, ...] = (
    "O",
    "B-corporation",
    "I-corporation",
    "B-creative-work",
    "I-creative-work",
    "B-group",
    "I-group",
    "B-location",
    "I-location",
    "B-person",
    "I-person",
    "B-product",
    "I-product",
)
"""The 13 BIO tags of WNUT-17 (6 entity types), in the order of the HF ``wnut_17`` loader."""

HH_RLHF_SUBSETS: tuple[str, ...] = ("helpful-base", "harmless-base")
LDNOOBW_VERSIONS: tuple[str, ...] = ("current", "c4")
UD_SPLITS: tuple[str, ...] = ("train", "dev", "test")


def _read_text(name: str) -> str:
    return path(name).read_text(encoding="utf-8")


def _split_at(n: int, fraction_num: int = 9, fraction_den: int = 10) -> int:
    """Index of the train/test boundary: ``floor(n * 9 / 10)`` in exact integer arithmetic."""
    return (n * fraction_num) // fraction_den


# ----------------------------------------------------------------------------- tinyshakespeare


def load_tinyshakespeare() -> dict[str, str]:
    """Load Tiny Shakespeare as one train and one validation string.

    Returns:
        ``{"train": str, "val": str}``: the first 90% of the characters (by position,
        ``n_train = floor(0.9 * n)``, as in nanoGPT's ``shakespeare_char``) and the last
        10%. The file has 1,115,394 characters (40,000 lines, 65 distinct characters), so
        ``len(train) == 1_003_854`` and ``len(val) == 111_540``.

    Source and license: ``data/tinyshakespeare/input.txt`` of karpathy/char-rnn; the text
    is Shakespeare (public domain), the repository is MIT.

    Citation: A. Karpathy, "The Unreasonable Effectiveness of Recurrent Neural Networks",
    2015, and github.com/karpathy/char-rnn.
    """
    text = _read_text("tinyshakespeare")
    n = _split_at(len(text))
    return {"train": text[:n], "val": text[n:]}


# --------------------------------------------------------------------------- sentence polarity


def load_sentence_polarity(
    seed: int = SENTENCE_POLARITY_SEED,
) -> dict[str, list[tuple[str, int]]]:
    """Load the Pang & Lee sentence polarity data set v1.0 (Rotten Tomatoes snippets).

    Returns:
        ``{"train", "validation", "test"}`` -> lists of ``(text, label)`` with label
        ``1`` (positive) or ``0`` (negative); sizes 8530 / 1066 / 1066 (the sizes of the
        HF ``rotten_tomatoes`` splits, though not the same examples).
        Texts are lower-cased and tokenized as in the source, with the trailing space
        stripped.

    Split rule (the source has no split): the 5,331 positive and 5,331 negative snippets
    (``rt-polarity.pos``/``.neg`` inside the NLTK zip, read in file order) are each
    shuffled with ``random.Random(seed)``; each class gives 4265 / 533 / 533 snippets to
    train / validation / test, so every split is balanced; then each split is shuffled
    with the same generator. Same seed, same split.

    License: CC BY 4.0 (Copyright (C) 2005 Bo Pang and Lillian Lee, as stated by
    nltk_data).

    Citation: B. Pang and L. Lee, "Seeing stars: Exploiting class relationships for
    sentiment categorization with respect to rating scales", ACL 2005.
    """
    with zipfile.ZipFile(path("sentence-polarity-v1.0")) as zf:
        members = {m.rsplit("/", 1)[-1]: m for m in zf.namelist()}
        classes: list[list[tuple[str, int]]] = []
        for member, label in (("rt-polarity.pos", 1), ("rt-polarity.neg", 0)):
            if member not in members:
                raise ValueError(f"{member} not found in sentence_polarity.zip")
            text = zf.read(members[member]).decode("utf-8")
            classes.append([(line.strip(), label) for line in text.splitlines() if line.strip()])
    rng = random.Random(seed)
    splits: dict[str, list[tuple[str, int]]] = {"train": [], "validation": [], "test": []}
    for examples in classes:
        examples = list(examples)
        rng.shuffle(examples)
        n_val = n_test = len(examples) // 10  # 533 of 5331
        n_train = len(examples) - n_val - n_test  # 4265
        splits["train"] += examples[:n_train]
        splits["validation"] += examples[n_train : n_train + n_val]
        splits["test"] += examples[n_train + n_val :]
    for examples in splits.values():
        rng.shuffle(examples)
    return splits


# ------------------------------------------------------------------------------------ hh-rlhf


def load_hh_rlhf(subset: str = "helpful-base") -> dict[str, list[dict[str, str]]]:
    """Load Anthropic's HH-RLHF preference pairs (one subset's published test file).

    Args:
        subset: ``"helpful-base"`` (2,354 pairs) or ``"harmless-base"`` (2,312 pairs).

    Returns:
        ``{"train": [...], "test": [...]}``, each record ``{"chosen": str, "rejected": str}``:
        whole conversations (``"\\n\\nHuman: ... \\n\\nAssistant: ..."``) that differ in the
        last assistant turn.

    Split rule: only the upstream *test* files are used (the train files are too large
    for the mirror); the first ``floor(0.9 * n)`` records (file order) are "train", the
    rest "test": 2118 / 236 for helpful-base, 2080 / 232 for harmless-base.

    License: MIT (Copyright (c) 2022 Anthropic). The conversations can be offensive
    (harmless-base was collected by red-teaming).

    Citation: Y. Bai et al., "Training a Helpful and Harmless Assistant with
    Reinforcement Learning from Human Feedback", arXiv:2204.05862, 2022.

    Raises:
        ValueError: ``subset`` is not one of the two above.
    """
    if subset not in HH_RLHF_SUBSETS:
        raise ValueError(
            f"subset must be one of {', '.join(repr(s) for s in HH_RLHF_SUBSETS)}; got {subset!r}"
        )
    with gzip.open(path(f"hh-rlhf-{subset}-test"), "rt", encoding="utf-8") as f:
        records = []
        for line in f:
            if line.strip():
                obj = json.loads(line)
                records.append({"chosen": obj["chosen"], "rejected": obj["rejected"]})
    n = _split_at(len(records))
    return {"train": records[:n], "test": records[n:]}


# ---------------------------------------------------------------------------------- tatoeba


def load_tatoeba_fra_eng() -> list[tuple[str, str]]:
    """Load the English-French sentence pairs of Tatoeba (manythings.org, 2017-09-29).

    Returns:
        142,787 ``(english, french)`` pairs, in file order (roughly sorted by length, so
        the first pairs are the shortest; many English sentences occur with several
        translations). No split is made here: subsample and split in the chapter.

    Source: ``fra.txt`` (two TAB-separated columns) inside the manythings.org archive
    ``fra-eng.zip`` dated 2017-09-29 (pinned copy; the live archive has changed).

    License: CC BY 2.0 FR (Tatoeba). Attribution: www.manythings.org/anki and tatoeba.org.

    Citation: Tatoeba, https://tatoeba.org; sentence pairs by manythings.org/anki.
    """
    with zipfile.ZipFile(path("tatoeba-fra-eng-manythings-2017-09-29")) as zf:
        member = next((m for m in zf.namelist() if m.rsplit("/", 1)[-1] == "fra.txt"), None)
        if member is None:
            raise ValueError("fra.txt not found in fra-eng.zip")
        text = zf.read(member).decode("utf-8")
    pairs = []
    for line in text.split("\n"):
        line = line.rstrip("\r")
        if not line:
            continue
        cols = line.split("\t")
        pairs.append((cols[0], cols[1]))
    return pairs


# ----------------------------------------------------------------------------------- WNUT-17


def _parse_conll_bio(text: str) -> list[tuple[list[str], list[str]]]:
    """Parse ``token<TAB>tag`` lines; a blank or whitespace-only line ends a sentence."""
    sentences: list[tuple[list[str], list[str]]] = []
    tokens: list[str] = []
    tags: list[str] = []
    for line in text.split("\n"):
        if not line.strip():  # "" or a lone TAB (the train file uses both)
            if tokens:
                sentences.append((tokens, tags))
                tokens, tags = [], []
            continue
        token, _, tag = line.rstrip("\r").rpartition("\t")
        tokens.append(token)
        tags.append(tag.strip())
    if tokens:
        sentences.append((tokens, tags))
    return sentences


def load_wnut17() -> dict[str, list[tuple[list[str], list[str]]]]:
    """Load WNUT-17 (emerging and rare entities) for token classification.

    Returns:
        ``{"train", "dev", "test"}`` -> lists of ``(tokens, tags)`` with two
        equally long lists of strings; tags are BIO over 6 entity types (see
        :data:`WNUT17_LABELS`). Sizes: 3394 / 1009 / 1287 sentences, the official
        splits (``wnut17train.conll``, ``emerging.dev.conll``,
        ``emerging.test.annotated``). Sentences end at an empty line or, as in most of
        the train file, at a line holding only a TAB.

    License: CC BY 4.0. The text is user-generated (Twitter, Reddit, YouTube,
    StackExchange) and can be offensive.

    Citation: L. Derczynski, E. Nichols, M. van Erp and N. Limsopatham, "Results of the
    WNUT2017 Shared Task on Novel and Emerging Entity Recognition", W-NUT 2017.
    """
    files = {"train": "wnut17-train", "dev": "wnut17-dev", "test": "wnut17-test"}
    return {split: _parse_conll_bio(_read_text(name)) for split, name in files.items()}


# ------------------------------------------------------------------------------------ CoNLL-U


@dataclass(slots=True)
class Token:
    """One syntactic word of a CoNLL-U sentence.

    ``head`` is the 1-based id of the governor (0 for the root; ``None`` when unset,
    ``"_"``); ``feats`` maps feature names to values (empty for ``"_"``); ``deps`` and
    ``misc`` keep the raw column text.
    """

    id: int
    form: str
    lemma: str
    upos: str
    xpos: str
    feats: dict[str, str]
    head: int | None
    deprel: str
    deps: str = "_"
    misc: str = "_"


@dataclass(slots=True)
class Sentence:
    """One CoNLL-U sentence: its ``sent_id`` and ``text`` comments and its word tokens.

    ``tokens`` holds the syntactic words only: multiword token ranges (``1-2``) and empty
    nodes (``8.1``) are skipped, so ``tokens[i].id == i + 1``.
    """

    sent_id: str | None
    text: str | None
    tokens: list[Token] = field(default_factory=list)

    @property
    def forms(self) -> list[str]:
        """The word forms, in order."""
        return [t.form for t in self.tokens]

    @property
    def upos(self) -> list[str]:
        """The universal POS tags, in order."""
        return [t.upos for t in self.tokens]


def _parse_feats(value: str) -> dict[str, str]:
    if value == "_" or not value:
        return {}
    feats = {}
    for item in value.split("|"):
        key, _, val = item.partition("=")
        feats[key] = val
    return feats


def parse_conllu(text: str) -> list[Sentence]:
    """Parse CoNLL-U text into sentences.

    Sentences are separated by blank lines. Comment lines ``# sent_id = ...`` and
    ``# text = ...`` fill :attr:`Sentence.sent_id` and :attr:`Sentence.text` (other
    comments are ignored). Word lines have 10 TAB-separated columns
    (ID FORM LEMMA UPOS XPOS FEATS HEAD DEPREL DEPS MISC); multiword token ranges
    (``1-2``) and empty nodes (``1.1``) are skipped.

    Raises:
        ValueError: a word line has fewer than 10 columns (the message gives the line
            number).
    """
    sentences: list[Sentence] = []
    current: Sentence | None = None
    for lineno, raw in enumerate(text.split("\n"), start=1):
        line = raw.rstrip("\r")
        if not line.strip():
            if current is not None:
                sentences.append(current)
                current = None
            continue
        if current is None:
            current = Sentence(sent_id=None, text=None)
        if line.startswith("#"):
            key, sep, value = line[1:].partition("=")
            if sep:
                key = key.strip()
                if key == "sent_id":
                    current.sent_id = value.strip()
                elif key == "text":
                    current.text = value.strip()
            continue
        cols = line.split("\t")
        if len(cols) < 10:
            raise ValueError(
                f"CoNLL-U line {lineno}: expected 10 TAB-separated columns, got {len(cols)}: "
                f"{line[:80]!r}"
            )
        tid = cols[0]
        if "-" in tid or "." in tid:
            continue
        head = cols[6]
        current.tokens.append(
            Token(
                id=int(tid),
                form=cols[1],
                lemma=cols[2],
                upos=cols[3],
                xpos=cols[4],
                feats=_parse_feats(cols[5]),
                head=None if head == "_" else int(head),
                deprel=cols[7],
                deps=cols[8],
                misc=cols[9],
            )
        )
    if current is not None:
        sentences.append(current)
    return sentences


@overload
def load_ud_ewt(split: None = None) -> dict[str, list[Sentence]]: ...
@overload
def load_ud_ewt(split: Literal["train", "dev", "test"]) -> list[Sentence]: ...
@overload
def load_ud_ewt(split: str) -> list[Sentence]: ...


def load_ud_ewt(split: str | None = None) -> dict[str, list[Sentence]] | list[Sentence]:
    """Load the Universal Dependencies English Web Treebank (UD_English-EWT v2.16).

    Args:
        split: ``"train"``, ``"dev"`` or ``"test"`` for one split; ``None`` (default) for
            all three.

    Returns:
        With ``split=None``: ``{"train", "dev", "test"}`` -> lists of :class:`Sentence`
        (12544 / 2001 / 2077 sentences, the official splits). With a split name: that
        list. Each sentence has ``sent_id``, ``text`` and ``tokens`` (:class:`Token`:
        id, form, lemma, upos, xpos, feats, head, deprel, deps, misc), multiword ranges
        and empty nodes left out (see :func:`parse_conllu`).

    License: CC BY-SA 4.0 for the annotations; the underlying web texts are partly public
    domain, portions (c) 2012 Google Inc., (c) 2011 Yahoo! Inc., (c) 2012 Trustees of the
    University of Pennsylvania and/or other original authors.

    Citation: N. Silveira et al., "A Gold Standard Dependency Corpus for English",
    LREC 2014; and Universal Dependencies, https://universaldependencies.org.

    Raises:
        ValueError: ``split`` is not one of the above.
    """
    if split is None:
        return {s: load_ud_ewt(s) for s in UD_SPLITS}
    if split not in UD_SPLITS:
        raise ValueError(
            f"split must be one of {', '.join(repr(s) for s in UD_SPLITS)} or None; got {split!r}"
        )
    return parse_conllu(_read_text(f"ud-english-ewt-{split}"))


# ----------------------------------------------------------------------------- poem sentiment


def load_poem_sentiment() -> dict[str, list[tuple[str, int]]]:
    """Load the Gutenberg poem sentiment data set (verse-level sentiment).

    Returns:
        ``{"train", "validation", "test"}`` -> lists of ``(verse, label)``, sizes
        892 / 105 / 104 (the official ``train.tsv``/``dev.tsv``/``test.tsv``, file order).
        Labels are the integers in the files: ``-1`` negative, ``0`` no_impact,
        ``1`` positive, ``2`` mixed (:data:`POEM_SENTIMENT_LABELS`; the HF
        ``poem_sentiment`` loader renumbers them 0 negative, 1 positive, 2 no_impact,
        3 mixed). ``mixed`` occurs only in train (49 verses).

    License: CC BY 4.0.

    Citation: E. Sheng and D. Uthus, "Investigating Societal Biases in a Poetry
    Composition System", arXiv:2011.02686, 2020.
    """
    files = {
        "train": "poem-sentiment-train",
        "validation": "poem-sentiment-dev",
        "test": "poem-sentiment-test",
    }
    out: dict[str, list[tuple[str, int]]] = {}
    for split, name in files.items():
        rows = []
        for line in _read_text(name).split("\n"):
            line = line.rstrip("\r")
            if not line.strip():
                continue
            cols = line.split("\t")
            if len(cols) < 3:
                raise ValueError(f"{name}: expected id<TAB>verse<TAB>label, got {line[:80]!r}")
            label = int(cols[-1])
            if label not in POEM_SENTIMENT_LABELS:
                raise ValueError(f"{name}: unknown label {label} in {line[:80]!r}")
            rows.append(("\t".join(cols[1:-1]), label))
        out[split] = rows
    return out


# -------------------------------------------------------------------------- instruction data


def load_instruction_data() -> list[dict[str, str]]:
    """Load the 1,100 instruction-following examples of *Build a Large Language Model
    (From Scratch)*, chapter 7.

    Returns:
        A list of 1,100 dicts ``{"instruction": str, "input": str, "output": str}`` in file
        order; ``input`` is ``""`` for 775 of them. No split is made here (the book uses
        the first 85% for training, 10% test, 5% validation).

    License: Apache-2.0 (the repository's license; the provenance of the examples is not
    documented upstream). A stand-in for databricks-dolly-15k, which is not mirrored.

    Citation: S. Raschka, *Build a Large Language Model (From Scratch)*, Manning, 2024;
    github.com/rasbt/LLMs-from-scratch.
    """
    with open(path("instruction-data-rasbt"), encoding="utf-8") as f:
        data = json.load(f)
    return [
        {"instruction": d["instruction"], "input": d.get("input", ""), "output": d["output"]}
        for d in data
    ]


INSTRUCTION_SPLIT: tuple[int, int] = (935, 1045)
"""Where the instruction data is cut, as in *LLMs from scratch* chapter 7: train is
``data[:935]`` (85%), test ``data[935:1045]`` (10%), validation ``data[1045:]`` (5%)."""


def split_instruction_data(
    data: Sequence[Mapping[str, str]] | None = None,
) -> dict[str, list[dict[str, str]]]:
    """Split the instruction data into train / validation / test without leaked instructions.

    The cut is the book's (:data:`INSTRUCTION_SPLIT`): train ``data[:935]``, test
    ``data[935:1045]``, validation ``data[1045:]``. The book's splits share instructions:
    18 of the 110 test examples (and 12 of the 55 validation examples) have an instruction
    that also occurs, as the exact same string, in the training split. Every training
    example whose instruction occurs in validation or test is then removed, so that no
    held-out instruction was seen in training. On the course's data that removes 64 of
    the 935 training examples (871 remain); validation and test are not changed.

    Args:
        data: the examples, ``{"instruction", "input", "output"}`` each, at least 1,045 of
            them; default :func:`load_instruction_data`.
    Returns:
        ``{"train", "val", "test", "removed"}``: lists of examples in file order;
        ``removed`` holds the training examples that were dropped.
    """
    if data is None:
        data = load_instruction_data()
    if isinstance(data, (str, Mapping)) or not isinstance(data, Sequence):
        raise TypeError(f"data must be a list of examples, got {type(data).__name__}")
    n_train, n_test = INSTRUCTION_SPLIT
    if len(data) < n_test:
        raise ValueError(f"data must hold at least {n_test} examples, got {len(data)}")
    for k, d in enumerate(data):
        if not isinstance(d, Mapping) or not isinstance(d.get("instruction"), str):
            raise ValueError(f"data[{k}] must be a dict with a str 'instruction', got {d!r}")
    train = [dict(d) for d in data[:n_train]]
    test = [dict(d) for d in data[n_train:n_test]]
    val = [dict(d) for d in data[n_test:]]
    held_out = {d["instruction"] for d in (*val, *test)}
    kept = [d for d in train if d["instruction"] not in held_out]
    removed = [d for d in train if d["instruction"] in held_out]
    return {"train": kept, "val": val, "test": test, "removed": removed}


# ---------------------------------------------------------------------------------- LDNOOBW


def load_ldnoobw(version: str = "current") -> list[str]:
    """Load the English "List of Dirty, Naughty, Obscene, and Otherwise Bad Words".

    Args:
        version: ``"current"`` (403 terms, the list as of commit 5faf2ba, 2020) or
            ``"c4"`` (377 terms, commit 25e679f of 2016, the exact list that C4's
            ``badwords`` filter pins).

    Returns:
        The terms (words and multi-word phrases), stripped, in file order.

    License: CC BY 4.0 ((c) 2012-2020 Shutterstock, Inc.). Contains slurs and obscene
    terms by design.

    Citation: Shutterstock, github.com/LDNOOBW/List-of-Dirty-Naughty-Obscene-and-Otherwise-
    Bad-Words; C. Raffel et al., "Exploring the Limits of Transfer Learning with a Unified
    Text-to-Text Transformer", JMLR 2020 (C4).

    Raises:
        ValueError: ``version`` is not one of the above.
    """
    files = {"current": "ldnoobw-en", "c4": "ldnoobw-en-c4"}
    if version not in files:
        raise ValueError(
            f"version must be one of {', '.join(repr(v) for v in LDNOOBW_VERSIONS)}; "
            f"got {version!r}"
        )
    return [line.strip() for line in _read_text(files[version]).splitlines() if line.strip()]


# ------------------------------------------------------------------------------ English text

ENGLISH_TEXT_SEED = 2024
"""Default seed of :func:`load_english_text`'s validation split and order."""

ENGLISH_TEXT_SOURCES: tuple[str, ...] = ("tatoeba", "ud-ewt", "sentence-polarity")
"""The sources of :func:`load_english_text`, in the order they are read."""

#: Consecutive sentences of one UD EWT document that make one document of English text.
UD_EWT_GROUP = 4

#: The registry files :func:`load_english_text` reads (the instruction data for its
#: decontamination only); bump :data:`ENGLISH_TEXT_RULE` when its rule changes.
ENGLISH_TEXT_FILES: tuple[str, ...] = (
    "tatoeba-fra-eng-manythings-2017-09-29",
    "ud-english-ewt-train",
    "sentence-polarity-v1.0",
    "instruction-data-rasbt",
)
ENGLISH_TEXT_RULE = 1


def _english_documents() -> dict[str, list[str]]:
    """Every document of :func:`load_english_text` per source, before the split."""
    tatoeba = list(dict.fromkeys(en.strip() for en, _ in load_tatoeba_fra_eng()))
    groups: list[list[str]] = []
    last_doc = None
    for sentence in load_ud_ewt("train"):
        sent_id = sentence.sent_id or ""
        doc = sent_id.rsplit("-", 1)[0]
        text = (sentence.text or " ".join(sentence.forms)).strip()
        if not groups or doc != last_doc or len(groups[-1]) == UD_EWT_GROUP:
            groups.append([])
        groups[-1].append(text)
        last_doc = doc
    polarity = [text.strip() for text, _ in load_sentence_polarity()["train"]]
    # Decontamination: no document may be one of the instruction data's strings.
    banned = {s.strip() for ex in load_instruction_data() for s in ex.values() if s.strip()}
    sources = {
        "tatoeba": tatoeba,
        "ud-ewt": list(dict.fromkeys(" ".join(g) for g in groups)),
        "sentence-polarity": list(dict.fromkeys(polarity)),
    }
    return {name: [d for d in docs if d and d not in banned] for name, docs in sources.items()}


@overload
def load_english_text(
    seed: int = ..., *, by_source: Literal[False] = False
) -> dict[str, list[str]]: ...
@overload
def load_english_text(
    seed: int = ..., *, by_source: Literal[True]
) -> dict[str, dict[str, list[str]]]: ...


def load_english_text(
    seed: int = ENGLISH_TEXT_SEED, *, by_source: bool = False
) -> dict[str, list[str]] | dict[str, dict[str, list[str]]]:
    """The English text the course's own base model is pretrained on (chapter 09).

    Only text that no later chapter evaluates on: the English side of Tatoeba
    (:func:`load_tatoeba_fra_eng`), the *training* sentences of UD EWT
    (:func:`load_ud_ewt`) and the *training* split of sentence polarity
    (:func:`load_sentence_polarity`, default seed). Neither the instruction data
    (:func:`load_instruction_data`) nor HH-RLHF is in it.

    Documents (each one string; a model reads them joined with ``<|endoftext|>``):

    * Tatoeba: each distinct English sentence once (the file repeats a sentence for each
      of its French translations: 142,787 pairs, 98,659 distinct English sentences),
      stripped, in file order.
    * UD EWT: groups of up to :data:`UD_EWT_GROUP` (4) consecutive training sentences of
      the same source document (the ``sent_id`` without its sentence number), their
      ``# text`` joined with a space; each distinct group once.
    * Sentence polarity: each distinct training snippet (lower-cased and tokenized, as
      in the source).

    Decontamination: a document equal to any instruction, input or output of the
    instruction data (stripped) is dropped.

    Split rule: each source's documents are shuffled with ``random.Random(seed)`` (the
    sources in the order of :data:`ENGLISH_TEXT_SOURCES`, one generator); the first
    ``n // 20`` (5%) of each source are the validation part, the rest the training part.
    Then each part is shuffled with the same generator, so the sources are interleaved.
    The parts are disjoint as strings (every document is distinct within its source, and
    a string in two sources would be rare: it is kept only in the first).

    Args:
        seed: the seed of the split and the order.
        by_source: return each part per source instead.
    Returns:
        ``{"train": [str, ...], "val": [str, ...]}`` (about 113,000 and 5,900
        documents); with ``by_source=True``, ``{"train": {source: [str, ...]},
        "val": {source: [...]}}`` in the order of :data:`ENGLISH_TEXT_SOURCES`.

    Licenses: Tatoeba CC BY 2.0 FR; UD EWT CC BY-SA 4.0; sentence polarity CC BY 4.0
    (see each loader).
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    if not isinstance(by_source, bool):
        raise TypeError(f"by_source must be a bool, got {by_source!r}")
    sources = _english_documents()
    seen: set[str] = set()
    rng = random.Random(seed)
    parts: dict[str, dict[str, list[str]]] = {"train": {}, "val": {}}
    for name in ENGLISH_TEXT_SOURCES:
        docs = [d for d in sources[name] if d not in seen]
        seen.update(docs)
        rng.shuffle(docs)
        n_val = len(docs) // 20
        parts["val"][name] = docs[:n_val]
        parts["train"][name] = docs[n_val:]
    if by_source:
        return parts
    out: dict[str, list[str]] = {}
    for split in ("train", "val"):
        docs = [d for name in ENGLISH_TEXT_SOURCES for d in parts[split][name]]
        rng.shuffle(docs)
        out[split] = docs
    return out

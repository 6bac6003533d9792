"""Tests of llmkit.datafilter: C4 rules, bad words, quality signals, deduplication (ch. 08).

Bad-word lists come from the data mirror (offline); the C4 rule tests use a tiny matcher.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from llmkit.datafilter import (
    BadWordsMatcher,
    C4Config,
    LSHIndex,
    MinHash,
    c4_clean,
    estimated_jaccard,
    exact_duplicates,
    filter_report,
    fineweb_quality,
    gopher_quality,
    jaccard,
    load_badwords,
    minhash_signature,
    near_duplicates,
    normalize_text,
    shingles,
)

GOOD = "This is a perfectly fine sentence about cats."
GOOD2 = "Another clean sentence follows the first one here!"
GOOD3 = 'She said the weather was quite nice today."'
TOY = BadWordsMatcher(["ass", "ball gag", "s&m"])


def page(*lines: str) -> str:
    return "\n".join([GOOD, GOOD2, GOOD3, *lines])


def cfg(**kw) -> C4Config:
    kw.setdefault("badwords", TOY)
    return C4Config(**kw)


# ------------------------------------------------------------------------------- bad words


def test_load_badwords_both_lists():
    c4, current = load_badwords("c4"), load_badwords("current")
    assert len(c4) == 377 and len(current) == 403
    assert "2 girls 1 cup" in c4 and "ass" in c4
    with pytest.raises(ValueError, match="version"):
        load_badwords("2016")


def test_badwords_word_boundaries_multiword_case():
    assert TOY.search("The assassin left the class.") is None
    assert TOY.search("What an ASS, really.") == "ASS"
    assert TOY.search("ass at the start") == "ass"
    assert TOY.search("a ball gag here") == "ball gag"
    assert TOY.search("a Ball   Gag here") == "Ball   Gag"
    assert TOY.search("a ballgag here") is None
    assert TOY.search("he likes s&m.") == "s&m"
    assert TOY.search("ass2") is None
    assert TOY.find_all("ass, ass; class") == ["ass", "ass"]
    assert "my ass." in TOY and "bass" not in TOY
    with pytest.raises(ValueError):
        BadWordsMatcher(["", "  "])
    with pytest.raises(TypeError):
        BadWordsMatcher("ass")


def test_c4_compatible_matcher_reproduces_c4_quirks():
    c4 = BadWordsMatcher(["ass", "ball gag"], c4_compatible=True)
    assert c4.search("the assassin.") is None
    assert c4.search("an ass2 here") == "ass"  # digits are boundaries in C4
    assert c4.search("ass at the start") is None  # needs a character before it
    assert c4.search("a ball  gag") is None  # exactly one space
    assert c4.search("a BALL GAG.") == "ball gag"


def test_real_list_matches_emoji_and_hyphenated():
    matcher = BadWordsMatcher(load_badwords("current"))
    assert matcher.search("rude 🖕 gesture") == "🖕"
    assert matcher.search("the assassin of the classic bass") is None


# -------------------------------------------------------------------------------------- C4


def test_clean_page_passes_unchanged():
    text, removals = c4_clean(page(), cfg())
    assert text == page() and removals == []


@pytest.mark.parametrize(
    ("line", "rule", "switch"),
    [
        (
            "No terminal punctuation at the end of this line",
            "terminal_punctuation",
            {"terminal_punctuation": False},
        ),
        (
            "This line trails off with an ellipsis...",
            "terminal_punctuation",
            {"terminal_punctuation": False},
        ),
        ("Too short.", "min_words", {"min_words_per_line": None}),
        ("Please enable JavaScript to view this page.", "javascript", {"javascript": False}),
        ("Read our Privacy Policy before you continue.", "policy", {"policy": False}),
        ("This site uses cookies to improve things.", "policy", {"policy": False}),
        ("x" * 1001 + " and some more words.", "long_word", {"max_word_length": None}),
    ],
)
def test_line_rules(line, rule, switch):
    text, removals = c4_clean(page(line), cfg())
    assert text == page()
    assert [(r.rule, r.scope, r.text) for r in removals] == [(rule, "line", line)]
    text, removals = c4_clean(page(line), cfg(**switch))
    assert text == page(line) and removals == []


@pytest.mark.parametrize(
    ("line", "rule", "switch"),
    [
        ("Lorem ipsum dolor sit amet, consectetur.", "lorem_ipsum", {"lorem_ipsum": False}),
        ("The code is function f() { return 1; }.", "curly_bracket", {"curly_bracket": False}),
        ("You can kiss my ass right now.", "badwords", {"badwords": None}),
        ("We sell a ball gag to adults.", "badwords", {"badwords": None}),
    ],
)
def test_page_rules(line, rule, switch):
    text, removals = c4_clean(page(line), cfg())
    assert text is None
    assert (removals[-1].rule, removals[-1].scope, removals[-1].text) == (rule, "page", line)
    text, removals = c4_clean(page(line), cfg(**switch))
    assert text == page(line) and removals == []


def test_badword_inside_word_keeps_page():
    assert c4_clean(page("The assassin crossed the classroom quietly."), cfg())[0] is not None


def test_page_rule_only_sees_surviving_lines():
    # As in C4: a "{" in a line that fails the punctuation rule does not drop the page.
    text, removals = c4_clean(page("var x = { a: 1 }"), cfg())
    assert text == page() and removals[0].rule == "terminal_punctuation"


def test_citations_removed():
    line = "Paris is the capital of France.[1] It is large.[citation needed][edit]"
    text, removals = c4_clean(page(line), cfg())
    assert text.splitlines()[-1] == "Paris is the capital of France. It is large."
    assert [r.text for r in removals] == ["[1]", "[citation needed]", "[edit]"]
    assert {r.scope for r in removals} == {"marker"}
    text, removals = c4_clean(page(line), cfg(citations=False, terminal_punctuation=False))
    assert text.splitlines()[-1] == line and removals == []


def test_min_sentences():
    short = f"{GOOD}\n{GOOD2}"
    text, removals = c4_clean(short, cfg())
    assert text is None and removals[-1].rule == "min_sentences"
    assert c4_clean(short, cfg(min_sentences=2))[0] == short
    assert c4_clean(short, cfg(min_sentences=None))[0] == short
    # three sentences on one line are three sentences
    assert c4_clean("One two three four five. Six seven. Eight nine!", cfg())[0] is not None


def test_default_config_uses_c4_list():
    assert c4_clean(page("You can kiss my ass right now."))[0] is None
    assert c4_clean(page())[0] == page()


def test_config_errors():
    with pytest.raises(ValueError, match="badwords"):
        C4Config(badwords="2016")
    with pytest.raises(ValueError, match="min_words_per_line"):
        C4Config(min_words_per_line=-1)
    with pytest.raises(TypeError, match="policy"):
        C4Config(policy="yes")
    with pytest.raises(TypeError, match="page"):
        c4_clean(["a"], cfg())


def test_filter_report_counts_and_examples():
    pages = [
        page("Too short.", "Please enable JavaScript to view this page."),  # kept, 2 lines out
        page("Lorem ipsum dolor sit amet, consectetur."),  # dropped
        page("You can kiss my ass right now."),  # dropped
        "Just one sentence here, nothing more.",  # too few sentences
        page("Cited claim that is true.[2]"),  # kept, 1 marker
    ]
    report = filter_report(pages, cfg(), k=1)
    assert report.n_pages == 5 and report.n_pages_kept == 2
    assert report.lines_removed == {"min_words": 1, "javascript": 1}
    assert report.pages_removed == {"lorem_ipsum": 1, "badwords": 1, "min_sentences": 1}
    assert report.markers_removed == 1
    assert report.examples["javascript"] == ["Please enable JavaScript to view this page."]
    assert report.n_lines == 5 + 4 + 4 + 1 + 4
    assert report.n_lines_kept == 3 + 4
    table = report.to_text()
    assert "lorem_ipsum" in table and "pages: 5 in, 2 kept" in table
    with pytest.raises(ValueError, match="k"):
        filter_report(pages, cfg(), k=-1)


# ------------------------------------------------------------------------- quality signals

PROSE = (
    "The old lighthouse stood at the edge of the harbour, and its keeper had lived there for "
    "thirty years. Every evening he climbed the narrow stairs to light the lamp, and every "
    "morning he wrote a short note in his logbook about the weather, the ships that had "
    "passed and the birds that nested on the rocks below.\nIn winter the storms were so "
    "strong that the windows shook, but the light never failed. Fishermen in the village "
    "said that they could set their clocks by it, and children were told stories about the "
    "keeper who never slept."
)


def test_gopher_quality_passes_prose():
    signals = gopher_quality(PROSE)
    assert all(s.passes for s in signals.values()), {k: s for k, s in signals.items()}
    assert signals["stop_words"].value >= 2


def test_gopher_quality_each_signal():
    assert not gopher_quality("word " * 10)["n_words"].passes
    assert not gopher_quality("a b c d " * 20)["mean_word_length"].passes
    assert not gopher_quality("#tag the " * 30)["hash_to_word_ratio"].passes
    assert not gopher_quality("wait... the " * 30)["ellipsis_to_word_ratio"].passes
    bullets = "\n".join(f"- item {i} of the list" for i in range(20))
    assert gopher_quality(bullets)["bullet_lines_fraction"].value == 1.0
    assert not gopher_quality(bullets)["bullet_lines_fraction"].passes
    trailing = "\n".join(f"line {i} goes on and on..." for i in range(10))
    assert not gopher_quality(trailing)["ellipsis_lines_fraction"].passes
    assert not gopher_quality("123 456 ?? !! the and " * 20)["alpha_words_fraction"].passes
    assert not gopher_quality("cats dogs birds fish " * 20)["stop_words"].passes
    repeated = "\n".join(["the same line over and over"] * 4 + ["a different one"])
    q = gopher_quality(repeated)
    assert q["duplicate_lines_fraction"].value == pytest.approx(3 / 5)
    assert not q["duplicate_lines_fraction"].passes
    assert not q["duplicate_line_chars_fraction"].passes
    assert not gopher_quality("buy now " * 50)["top_2gram_chars_fraction"].passes


def test_fineweb_quality():
    q = fineweb_quality("Menu\nHome\nAbout us\nContact\nA real sentence that ends well.")
    assert q["line_punct_fraction"].value == pytest.approx(0.2)
    assert not q["short_lines_fraction"].passes
    assert all(s.passes for s in fineweb_quality(PROSE).values())


# --------------------------------------------------------------------------- deduplication


def test_exact_duplicates_normalisation():
    docs = ["Hello,  World!", "hello world", "Hello world?\n", "something else", "HELLO WORLD"]
    assert normalize_text(docs[0]) == "hello world"
    assert exact_duplicates(docs) == [[0, 1, 2, 4]]
    assert exact_duplicates(["a b", "a  c"]) == []


def numbered(lo: int, hi: int) -> set[str]:
    return {f"shingle{i}" for i in range(lo, hi)}


@pytest.mark.parametrize(
    ("b", "expected"),
    [
        (numbered(0, 90), 0.9),
        (numbered(0, 50), 0.5),
        (numbered(0, 10), 0.1),
        (numbered(50, 150), 1 / 3),
        (numbered(100, 200), 0.0),
    ],
)
def test_minhash_estimates_known_jaccard(b, expected):
    a = numbered(0, 100)
    assert jaccard(a, b) == pytest.approx(expected)
    mh = MinHash(num_perm=128, seed=0)
    est = estimated_jaccard(mh.signature_of_set(a), mh.signature_of_set(b))
    assert abs(est - expected) <= 0.1


def test_minhash_hash_functions_give_the_signature():
    mh = MinHash(num_perm=16, seed=3)
    funcs = mh.hash_functions()
    assert len(funcs) == 16
    for items in ({"a"}, {"to be or not", "or not to be", "that is the"}, numbered(0, 40)):
        sig = [min(h(s) for s in items) for h in funcs]
        assert sig == mh.signature_of_set(items).tolist()
        assert all(0 <= h(s) < 2**32 for h in funcs for s in items)


def test_minhash_deterministic_and_errors():
    text = "the quick brown fox jumps over the lazy dog again and again"
    sig = minhash_signature(text)
    assert sig.shape == (128,) and sig.dtype == np.uint64
    assert np.array_equal(sig, MinHash(seed=0).signature(text))
    assert not np.array_equal(sig, MinHash(seed=1).signature(text))
    assert estimated_jaccard(sig, sig) == 1.0
    with pytest.raises(ValueError):
        estimated_jaccard(sig, sig[:10])
    with pytest.raises(ValueError, match="num_perm"):
        MinHash(num_perm=0)


def test_lsh_parameters_follow_threshold():
    index = LSHIndex(threshold=0.8, num_perm=128)
    assert index.bands * index.rows <= 128
    assert (index.bands, index.rows) == (14, 9)
    assert index.candidate_probability(0.9) > 0.998
    assert index.candidate_probability(0.1) < 1e-6
    assert index.candidate_probability(0.5) < 0.03
    equal = LSHIndex(0.8, 128, false_negative_weight=0.5)
    assert (equal.bands, equal.rows) == (9, 13)
    low = LSHIndex(threshold=0.3, num_perm=128)
    assert low.candidate_probability(0.5) > index.candidate_probability(0.5)
    with pytest.raises(ValueError, match="threshold"):
        LSHIndex(threshold=1.0)


def words(lo: int, hi: int) -> str:
    return " ".join(f"w{i}" for i in range(lo, hi))


def test_near_duplicates_finds_09_not_01():
    # word 5-gram shingles: words 0..103 -> 100 shingles; 0..93 -> 90 (J = 0.9);
    # 0..13 -> 10 (J = 0.1 with the first); 500..603 unrelated.
    docs = [words(0, 104), words(0, 94), words(0, 14), words(500, 604)]
    sets = [shingles(d) for d in docs]
    assert jaccard(sets[0], sets[1]) == pytest.approx(0.9)
    assert jaccard(sets[0], sets[2]) == pytest.approx(0.1)
    pairs = near_duplicates(docs, threshold=0.8)
    assert [(i, j) for i, j, _ in pairs] == [(0, 1)]
    assert abs(pairs[0][2] - 0.9) <= 0.1
    index = LSHIndex(0.8, 128)
    mh = MinHash()
    for i, d in enumerate(docs):
        index.insert(i, mh.signature(d))
    assert 1 in index.query(mh.signature(docs[0]))
    assert 2 not in index.query(mh.signature(docs[0]))
    low = [(i, j) for i, j, _ in near_duplicates(docs, threshold=0.05)]
    assert (0, 2) in low and (0, 3) not in low


def test_dataclass_reports_are_plain():
    assert dataclasses.asdict(filter_report([page()], cfg()))["n_pages_kept"] == 1

"""Evaluation metrics used across the course.

Chapter 01 starts the module with the language-modelling numbers:

* :func:`perplexity` -- ``exp`` of the mean negative log-likelihood (in nats): the
  size of a uniform choice that would be equally surprised. A uniform model over ``V``
  tokens has loss ``log V`` and perplexity ``V``.
* :func:`bits_per_token` -- the same loss in bits (``nll / ln 2``).
* :func:`bytes_per_token` -- a tokenizer's compression ratio (UTF-8 bytes per token).

Losses measured with different tokenizers are not comparable per token; compare
per byte (``bits_per_token / bytes_per_token`` gives bits per byte).

Chapter 05 adds the tagging metrics:

* :func:`bio_spans` -- the entities of a BIO tag sequence, with the CoNLL rules;
* :func:`span_f1` -- entity-level precision, recall and F1 (an entity counts only if its
  type and both boundaries are right), as CoNLL's ``conlleval`` computes them;
* :func:`span_f1_by_type` -- the same, separately for each entity type;
* :func:`span_outcomes` and :func:`span_errors` -- what went wrong with the entities that
  are not exactly right (missed, wrong type, wrong boundaries, false alarms), one by one
  and counted;
* :func:`accuracy` -- the fraction of equal labels (e.g. UPOS tags).

Chapter 06 adds the translation metrics, computed by ``sacrebleu`` (Post, 2018) so that the
numbers are comparable with published ones:

* :func:`bleu` -- corpus BLEU (Papineni et al., 2002): the geometric mean of the modified
  1- to 4-gram precisions times a brevity penalty, on sacrebleu's ``13a`` tokenisation;
* :func:`chrf` -- corpus chrF (Popović, 2015): an F-score (recall weighted twice as much as
  precision, ``beta = 2``) of character 1- to 6-grams; more forgiving of morphology (French
  agreement endings) and meaningful on single short sentences, where BLEU's 4-grams are
  often all missing.

Both return sacrebleu's 0-100 scale.

Chapter 09 adds the metrics of instruction following, per response:

* :func:`rouge_l` -- ROUGE-L (Lin, 2004): the longest common subsequence (LCS) of the
  response's and the reference's words, as an F-measure of its precision
  ``LCS / len(response)`` and recall ``LCS / len(reference)``; :func:`rouge_l_scores`
  returns all three. Words are those of Google's ``rouge-score`` package
  (:func:`rouge_tokenize`), whose numbers these equal;
* :func:`exact_match` -- whether the response equals the reference once both are
  normalised as SQuAD's evaluation does (Rajpurkar et al., 2016): lowercase, punctuation
  and the articles *a*, *an*, *the* removed, whitespace collapsed.

Chapter 10 adds the uncertainty of a measured mean:

* :func:`bootstrap_interval` -- a percentile bootstrap interval (Efron, 1979) of the mean of
  per-example scores, e.g. the outcomes of a reward model's pairwise comparisons.
"""

from __future__ import annotations

import math
import numbers
import re
import string
from collections.abc import Sequence
from typing import Any

import torch

from llmkit import validate

__all__ = [
    "perplexity",
    "bits_per_token",
    "bytes_per_token",
    "bio_spans",
    "span_f1",
    "span_f1_by_type",
    "span_outcomes",
    "span_errors",
    "SPAN_ERROR_KINDS",
    "accuracy",
    "bleu",
    "chrf",
    "rouge_tokenize",
    "lcs_length",
    "rouge_l_scores",
    "rouge_l",
    "normalize_answer",
    "exact_match",
    "bootstrap_interval",
]


def _as_nll(nll: float | torch.Tensor, name: str = "mean_nll") -> float:
    if isinstance(nll, torch.Tensor):
        if nll.numel() != 1:
            raise ValueError(f"{name} must be a scalar, got a tensor of shape {tuple(nll.shape)}")
        nll = nll.detach().item()
    if isinstance(nll, bool) or not isinstance(nll, numbers.Real):
        raise TypeError(f"{name} must be a number or a scalar tensor, got {type(nll).__name__}")
    nll = float(nll)
    if math.isnan(nll) or nll < 0:
        raise ValueError(f"{name} must be a mean negative log-likelihood >= 0 (nats), got {nll}")
    return nll


def perplexity(mean_nll: float | torch.Tensor) -> float:
    """``exp(mean_nll)``, for a mean negative log-likelihood in nats per token.

    >>> round(perplexity(math.log(65)), 6)
    65.0

    An infinite loss (a token given probability 0) gives ``inf``.
    """
    nll = _as_nll(mean_nll)
    try:
        return math.exp(nll)
    except OverflowError:
        return math.inf


def bits_per_token(mean_nll: float | torch.Tensor) -> float:
    """The loss in bits: ``mean_nll / ln 2`` (``mean_nll`` in nats per token).

    >>> bits_per_token(math.log(2))
    1.0
    """
    return _as_nll(mean_nll) / math.log(2)


def bytes_per_token(text: str, n_tokens: int) -> float:
    """Compression ratio of a tokenizer: UTF-8 bytes of ``text`` per token.

    Args:
        text: the encoded text.
        n_tokens: how many tokens it became, ``>= 1`` (e.g. ``len(tok.encode(text))``).

    >>> bytes_per_token("héllo", 2)
    3.0
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    validate.positive_int("n_tokens", n_tokens)
    return len(text.encode("utf-8")) / n_tokens


def _split_tag(tag: str) -> tuple[str, str]:
    """``"B-PER" -> ("B", "PER")``, ``"O" -> ("O", "")``."""
    if tag == "O":
        return "O", ""
    prefix, sep, kind = tag.partition("-")
    if not sep or prefix not in ("B", "I") or not kind:
        raise ValueError(f"tags must be 'O', 'B-<type>' or 'I-<type>', got {tag!r}")
    return prefix, kind


def bio_spans(tags: Sequence[str]) -> set[tuple[str, int, int]]:
    """The entities of one BIO-tagged sentence, as ``conlleval`` reads them.

    An entity starts at ``B-X``, or at an ``I-X`` that does not continue an entity of type
    ``X`` (after ``O`` or another type: CoNLL's lenient reading of a missing ``B``). It
    extends over the following ``I-X`` tags.

    Args:
        tags: one tag per word: ``"O"``, ``"B-<type>"`` or ``"I-<type>"``.
    Returns:
        the set of ``(type, start, end)`` with ``end`` exclusive.

    >>> sorted(bio_spans(["B-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-PER"]))
    [('LOC', 3, 4), ('LOC', 4, 5), ('PER', 0, 2), ('PER', 5, 6)]
    """
    spans: set[tuple[str, int, int]] = set()
    kind, start = "", -1
    for i, tag in enumerate(tags):
        prefix, k = _split_tag(tag)
        continues = prefix == "I" and k == kind and start >= 0
        if not continues and start >= 0:
            spans.add((kind, start, i))
            kind, start = "", -1
        if prefix != "O" and not continues:
            kind, start = k, i
    if start >= 0:
        spans.add((kind, start, len(tags)))
    return spans


def span_f1(
    true_tags: Sequence[Sequence[str]], pred_tags: Sequence[Sequence[str]]
) -> dict[str, float]:
    """Entity-level precision, recall and F1 over a corpus of BIO-tagged sentences.

    A predicted entity is correct only when an entity of the same type spans exactly the
    same words in the gold tags (CoNLL-2003 and WNUT-17 semantics, as ``conlleval`` and
    ``seqeval``'s default mode).

    Args:
        true_tags: gold tags, one list per sentence.
        pred_tags: predicted tags, the same lengths.
    Returns:
        ``{"precision", "recall", "f1", "n_true", "n_pred", "n_correct"}``; a ratio whose
        denominator is 0 is 0.0.

    >>> span_f1([["B-PER", "I-PER", "O"]], [["B-PER", "O", "O"]])["f1"]
    0.0
    """
    n_true = n_pred = n_correct = 0
    for gold, pred in _corpus_spans(true_tags, pred_tags):
        n_true += len(gold)
        n_pred += len(pred)
        n_correct += len(gold & pred)
    return _prf(n_true, n_pred, n_correct)


def _corpus_spans(
    true_tags: Sequence[Sequence[str]], pred_tags: Sequence[Sequence[str]]
) -> list[tuple[set[tuple[str, int, int]], set[tuple[str, int, int]]]]:
    """``[(gold spans, predicted spans)]`` per sentence, with :func:`span_f1`'s checks."""
    if isinstance(true_tags, str) or isinstance(pred_tags, str):
        raise TypeError("true_tags and pred_tags must be lists of tag lists")
    if len(true_tags) != len(pred_tags):
        raise ValueError(
            f"true_tags and pred_tags must hold the same number of sentences, got "
            f"{len(true_tags)} and {len(pred_tags)}"
        )
    out = []
    for i, (t, p) in enumerate(zip(true_tags, pred_tags, strict=True)):
        if isinstance(t, str) or isinstance(p, str):
            raise TypeError(f"sentence {i}: tags must be a list of strings, not one string")
        if len(t) != len(p):
            raise ValueError(f"sentence {i}: {len(t)} gold tags but {len(p)} predicted tags")
        out.append((bio_spans(t), bio_spans(p)))
    return out


def _prf(n_true: int, n_pred: int, n_correct: int) -> dict[str, float]:
    precision = n_correct / n_pred if n_pred else 0.0
    recall = n_correct / n_true if n_true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "n_true": n_true,
        "n_pred": n_pred,
        "n_correct": n_correct,
    }


def span_f1_by_type(
    true_tags: Sequence[Sequence[str]], pred_tags: Sequence[Sequence[str]]
) -> dict[str, dict[str, float]]:
    """:func:`span_f1` for each entity type separately.

    A gold entity of type ``X`` counts for ``X``'s recall, a predicted one for ``X``'s
    precision; an entity found with the wrong type is a miss for its gold type and a false
    alarm for the predicted one. Summing ``n_true``, ``n_pred`` and ``n_correct`` over the
    types gives :func:`span_f1`'s counts.

    Args:
        true_tags, pred_tags: as :func:`span_f1`.
    Returns:
        ``{type: {"precision", "recall", "f1", "n_true", "n_pred", "n_correct"}}`` for
        every type that occurs in the gold or the predicted tags, sorted by name.

    >>> r = span_f1_by_type([["B-PER", "O", "B-LOC"]], [["B-PER", "O", "B-PER"]])
    >>> r["PER"]["precision"], r["PER"]["recall"], r["LOC"]["recall"]
    (0.5, 1.0, 0.0)
    """
    counts: dict[str, list[int]] = {}
    for gold, pred in _corpus_spans(true_tags, pred_tags):
        for kind, *_ in gold:
            counts.setdefault(kind, [0, 0, 0])[0] += 1
        for kind, *_ in pred:
            counts.setdefault(kind, [0, 0, 0])[1] += 1
        for kind, *_ in gold & pred:
            counts[kind][2] += 1
    return {kind: _prf(*counts[kind]) for kind in sorted(counts)}


#: The kinds of :func:`span_errors`, in the order it returns them.
SPAN_ERROR_KINDS = (
    "correct",
    "wrong type",
    "wrong boundaries",
    "wrong type and boundaries",
    "missed",
    "false alarm",
)


def span_outcomes(
    true_tags: Sequence[Sequence[str]], pred_tags: Sequence[Sequence[str]]
) -> list[tuple[int, str, tuple[str, int, int], list[tuple[str, int, int]]]]:
    """The outcome of every gold entity, and every predicted entity that touches no gold
    one, in corpus order.

    A gold entity is ``"correct"`` (a predicted entity has its type and both boundaries),
    else ``"wrong type"`` (a predicted entity spans exactly its words with another type),
    else ``"wrong boundaries"`` (a predicted entity of its type overlaps it), else
    ``"wrong type and boundaries"`` (some other predicted entity overlaps it), else
    ``"missed"``. A predicted entity that overlaps no gold entity is a ``"false alarm"``.

    Args:
        true_tags, pred_tags: as :func:`span_f1`.
    Returns:
        ``(sentence, kind, span, overlapping)`` tuples: ``span`` is the gold entity
        ``(type, start, end)`` (the predicted one for a false alarm) and ``overlapping``
        the predicted entities that share a word with it, sorted.

    >>> span_outcomes([["B-PER", "I-PER", "O"]], [["B-PER", "O", "B-LOC"]])
    [(0, 'wrong boundaries', ('PER', 0, 2), [('PER', 0, 1)]), (0, 'false alarm', ('LOC', 2, 3), [])]
    """
    out: list[tuple[int, str, tuple[str, int, int], list[tuple[str, int, int]]]] = []
    for i, (gold, pred) in enumerate(_corpus_spans(true_tags, pred_tags)):
        for kind, a, b in sorted(gold, key=lambda s: (s[1], s[2], s[0])):
            near = sorted((s for s in pred if s[1] < b and a < s[2]), key=lambda s: s[1:])
            if (kind, a, b) in pred:
                outcome = "correct"
            elif any(s[1:] == (a, b) for s in near):
                outcome = "wrong type"
            elif any(s[0] == kind for s in near):
                outcome = "wrong boundaries"
            else:
                outcome = "wrong type and boundaries" if near else "missed"
            out.append((i, outcome, (kind, a, b), near))
        for span in sorted(pred, key=lambda s: (s[1], s[2], s[0])):
            if not any(a < span[2] and span[1] < b for _, a, b in gold):
                out.append((i, "false alarm", span, []))
    return out


def span_errors(
    true_tags: Sequence[Sequence[str]], pred_tags: Sequence[Sequence[str]]
) -> dict[str, int]:
    """How many entities had each outcome of :func:`span_outcomes`.

    The first five counts add up to the number of gold entities; ``"correct"`` is
    :func:`span_f1`'s ``n_correct``.

    Args:
        true_tags, pred_tags: as :func:`span_f1`.
    Returns:
        ``{kind: count}`` for each kind of :data:`SPAN_ERROR_KINDS`, in that order.

    >>> span_errors([["B-PER", "I-PER", "O", "B-LOC"]], [["B-PER", "O", "O", "O"]])["missed"]
    1
    """
    out = dict.fromkeys(SPAN_ERROR_KINDS, 0)
    for _, kind, _, _ in span_outcomes(true_tags, pred_tags):
        out[kind] += 1
    return out


def accuracy(true: Sequence[Any], pred: Sequence[Any]) -> float:
    """The fraction of positions where ``pred`` equals ``true`` (flat sequences).

    >>> accuracy(["NOUN", "VERB", "DET"], ["NOUN", "NOUN", "DET"])
    0.6666666666666666
    """
    if len(true) != len(pred):
        raise ValueError(
            f"true and pred must have the same length, got {len(true)} and {len(pred)}"
        )
    if not true:
        raise ValueError("true and pred are empty: accuracy is undefined")
    return sum(a == b for a, b in zip(true, pred, strict=True)) / len(true)


def _reference_streams(
    hypotheses: Sequence[str], references: Sequence[str] | Sequence[Sequence[str]]
) -> list[list[str | None]]:
    """Check the inputs and transpose per-hypothesis references into sacrebleu's streams.

    ``references[i]`` is one string or a list of strings (the references of hypothesis
    ``i``); sacrebleu wants ``streams[k][i]``, the ``k``-th reference of hypothesis ``i``,
    with ``None`` where a hypothesis has fewer references.
    """
    for name, value in (("hypotheses", hypotheses), ("references", references)):
        if isinstance(value, str):
            raise TypeError(f"{name} must be a list of strings, not one string (wrap it: [text])")
        if not isinstance(value, Sequence):
            raise TypeError(f"{name} must be a list, got {type(value).__name__}")
    if len(hypotheses) != len(references):
        raise ValueError(
            f"hypotheses and references must have the same length, got {len(hypotheses)} "
            f"and {len(references)}"
        )
    if not hypotheses:
        raise ValueError("hypotheses and references are empty: the score is undefined")
    per_hyp: list[list[str]] = []
    for i, (hyp, refs) in enumerate(zip(hypotheses, references, strict=True)):
        if not isinstance(hyp, str):
            raise TypeError(f"hypotheses[{i}] must be a str, got {type(hyp).__name__}")
        refs = [refs] if isinstance(refs, str) else list(refs)
        if not refs or not all(isinstance(r, str) for r in refs):
            raise TypeError(
                f"references[{i}] must be a string or a non-empty list of strings, got "
                f"{references[i]!r}"
            )
        per_hyp.append(refs)
    n = max(len(r) for r in per_hyp)
    return [[r[k] if k < len(r) else None for r in per_hyp] for k in range(n)]


def bleu(
    hypotheses: Sequence[str],
    references: Sequence[str] | Sequence[Sequence[str]],
    lowercase: bool = False,
) -> float:
    """Corpus BLEU through ``sacrebleu.corpus_bleu`` with its defaults (``13a`` tokenisation,
    ``exp`` smoothing, 4-grams), on the 0-100 scale.

    The n-gram counts of all sentences are added up before the precisions are taken, so
    corpus BLEU is not the mean of sentence BLEUs.

    Args:
        hypotheses: one system output per segment.
        references: per segment, its reference string, or a list of references (several
            acceptable translations; the counts clip against the best match).
        lowercase: compare case-insensitively.
    Returns:
        the BLEU score in ``[0, 100]``.

    >>> round(bleu(["le chat est sur le tapis"], ["le chat est sur le tapis"]), 6)
    100.0
    >>> # precisions 5/6, 3/5, 2/4, 1/3, no brevity penalty: (5/6 * 3/5 * 2/4 * 1/3) ** (1/4)
    >>> round(bleu(["the cat sat on the mat"], ["the cat sat on a mat"]), 2)
    53.73
    """
    import sacrebleu

    streams = _reference_streams(hypotheses, references)
    return float(sacrebleu.corpus_bleu(list(hypotheses), streams, lowercase=lowercase).score)


def chrf(
    hypotheses: Sequence[str],
    references: Sequence[str] | Sequence[Sequence[str]],
    word_order: int = 0,
) -> float:
    """Corpus chrF through ``sacrebleu.corpus_chrf`` (character 6-grams, ``beta = 2``), on the
    0-100 scale.

    Args:
        hypotheses: one system output per segment.
        references: per segment, a reference string or a list of references.
        word_order: ``0`` for chrF, ``2`` for chrF++ (adds word 1- and 2-grams).
    Returns:
        the chrF score in ``[0, 100]``.

    >>> round(chrf(["le chat"], ["le chat"]), 6)
    100.0
    """
    import sacrebleu

    validate.integer("word_order", word_order, minimum=0)  # 0: chrF, 2: chrF++
    streams = _reference_streams(hypotheses, references)
    return float(sacrebleu.corpus_chrf(list(hypotheses), streams, word_order=word_order).score)


# --------------------------------------------------------------------------- chapter 09

_NON_ALPHANUM = re.compile(r"[^a-z0-9]+")
_VALID_TOKEN = re.compile(r"^[a-z0-9]+$")


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    return value


def rouge_tokenize(text: str) -> list[str]:
    """The words ROUGE compares, as ``rouge-score``'s default tokenizer makes them (no
    stemming): lowercase, every run of characters other than ``a-z`` and ``0-9`` becomes a
    space (so accented letters and other scripts separate words and are dropped), split.

    >>> rouge_tokenize("The cat's hat -- 2 ÉTÉ!")
    ['the', 'cat', 's', 'hat', '2', 't']
    """
    words = _NON_ALPHANUM.sub(" ", _text("text", text).lower()).split()
    return [w for w in words if _VALID_TOKEN.match(w)]


def lcs_length(a: Sequence[Any], b: Sequence[Any]) -> int:
    """Length of the longest common subsequence of ``a`` and ``b`` (dynamic programming,
    ``O(len(a) * len(b))`` time, ``O(len(b))`` memory).

    >>> lcs_length("ABCBDAB", "BDCABA")
    4
    """
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l_scores(prediction: str, reference: str) -> dict[str, float]:
    """ROUGE-L of one response against one reference: precision, recall and F-measure.

    With ``L`` the LCS length of their words (:func:`rouge_tokenize`):
    ``precision = L / len(prediction words)``, ``recall = L / len(reference words)``,
    ``fmeasure = 2 P R / (P + R)`` (0 when both are 0). All three are 0 when either text
    has no words. These are ``rouge_score.rouge_scorer.RougeScorer(["rougeL"])
    .score(reference, prediction)["rougeL"]`` (note that package's argument order).

    Returns:
        ``{"precision", "recall", "fmeasure"}``, each in ``[0, 1]``.

    >>> rouge_l_scores("the cat sat on the mat", "the cat is on the mat")
    {'precision': 0.8333333333333334, 'recall': 0.8333333333333334, 'fmeasure': 0.8333333333333334}
    """
    pred = rouge_tokenize(_text("prediction", prediction))
    ref = rouge_tokenize(_text("reference", reference))
    if not pred or not ref:
        return {"precision": 0.0, "recall": 0.0, "fmeasure": 0.0}
    lcs = lcs_length(ref, pred)
    p, r = lcs / len(pred), lcs / len(ref)
    f = 2 * p * r / (p + r) if p + r > 0 else 0.0
    return {"precision": p, "recall": r, "fmeasure": f}


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure of one response against one reference, in ``[0, 1]``
    (:func:`rouge_l_scores`).

    >>> rouge_l("Paris.", "The capital is Paris")   # LCS 1: P = 1, R = 1/4
    0.4
    """
    return rouge_l_scores(prediction, reference)["fmeasure"]


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD's answer normalisation: lowercase, drop ASCII punctuation, drop the articles
    *a*, *an*, *the*, collapse whitespace.

    >>> normalize_answer("  The Eiffel   Tower!")
    'eiffel tower'
    """
    text = "".join(c for c in _text("text", text).lower() if c not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, reference: str) -> bool:
    """Whether ``prediction`` and ``reference`` are equal after :func:`normalize_answer`.

    >>> exact_match("Paris.", "paris"), exact_match("Paris, France", "Paris")
    (True, False)
    """
    return normalize_answer(_text("prediction", prediction)) == normalize_answer(
        _text("reference", reference)
    )


def bootstrap_interval(
    values: Sequence[float] | torch.Tensor,
    n: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float]:
    """A percentile bootstrap interval of the mean of ``values``.

    Draw ``n`` resamples of the values with replacement (each as large as the original),
    take each resample's mean, and return the ``(1 - level) / 2`` and ``(1 + level) / 2``
    quantiles of those means (``torch.quantile``'s linear interpolation). Deterministic for
    a given ``seed`` (a ``torch.Generator``). With ``n = 0`` the interval is the mean itself.

    Args:
        values: per-example scores ``(m,)``, ``m >= 1`` (e.g. 1 / 0.5 / 0 per pair).
        n: resamples (>= 0).
        seed: seed of the resampling generator.
        level: the interval's coverage, in ``(0, 1)``.
    Returns:
        ``(low, high)`` floats, ``low <= mean <= high`` up to resampling noise.
    """
    validate.integer("n", n, minimum=0)
    validate.integer("seed", seed, minimum=0)
    level = validate.number("level", level, low=0.0, high=1.0)
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be strictly between 0 and 1, got {level}")
    v = torch.as_tensor(values, dtype=torch.float64).flatten().cpu()
    if v.numel() == 0:
        raise ValueError("values must hold at least one number")
    if not bool(torch.isfinite(v).all()):
        raise ValueError("values must be finite")
    if n == 0:
        mean = float(v.mean())
        return mean, mean
    generator = torch.Generator().manual_seed(seed)
    rows = torch.randint(0, v.numel(), (n, v.numel()), generator=generator)
    means = v[rows].mean(dim=1)  # (n,)
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
    low, high = torch.quantile(means, q).tolist()
    return float(low), float(high)

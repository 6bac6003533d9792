"""Lab 01's checks: each catalogued slip fails and names its hint (the rest is in
``test_checks.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from llmkit.course.checks import ch01
from llmkit.course.checks.reference import ch01 as ref
from llmkit.course.checks.runner import CheckFailed


def _own(fn):
    """The slip as a student's own function: the reference module's code run again under
    another file name, so that the check's tripwires on the reference code do not fire."""
    copy: dict = {"__name__": "student"}
    exec(compile(Path(ref.__file__).read_text(), "<student>", "exec"), copy)
    return copy[fn.__name__]


SLIPS = [
    (ch01.check_bigram_counts, ref.bigram_counts_transposed, "transposed"),
    (ch01.check_bigram_counts, ref.bigram_counts_wrapped, "wrap around"),
    (ch01.check_get_pair_counts, ref.pair_counts_no_overlap, "pairs overlap"),
    (ch01.check_merge, ref.merge_overlapping, "must not overlap"),
    (ch01.check_merge, ref.merge_drops_last, "lone last id"),
    (ch01.check_train_bpe, ref.train_bpe_largest_tie, "smallest pair"),
    (ch01.check_train_bpe, ref.train_bpe_keeps_singletons, "fewer than 2"),
    (ch01.check_train_bpe, ref.train_bpe_across_chunks, "never cross chunks"),
    (ch01.check_encode, ref.encode_by_frequency, "learned first"),
    (ch01.check_encode, ref.encode_in_dict_order, "learned first"),
    (ch01.check_decode, ref.decode_as_text, "stay in bytes"),
]


@pytest.mark.parametrize(("check", "slip", "hint"), SLIPS, ids=[s[1].__name__ for s in SLIPS])
def test_each_slip_fails_with_its_hint(check, slip, hint):
    with pytest.raises(CheckFailed, match=rf"(?s)hint: .*{hint}"):
        check(_own(slip), seed=0)


def test_the_shortcut_through_an_object_the_lab_imports_fails():
    from llmkit.tokenizers import BPETokenizer

    def train_bpe(text, vocab_size):
        return BPETokenizer.train(text, vocab_size).merges

    with pytest.raises(CheckFailed, match="must be written without"):
        ch01.check_train_bpe(train_bpe, seed=0)


def test_float_counts_are_a_dtype_error():
    def bigram_counts(ids, v):
        return torch.bincount(ids[:-1] * v + ids[1:], minlength=v * v).reshape(v, v).float()

    with pytest.raises(CheckFailed, match="dtype"):
        ch01.check_bigram_counts(bigram_counts, seed=0)

"""Benchmark: incremental BPE training vs the naive recount-everything trainer.

Trains a byte-level BPE (default: 1,000 tokens) on tinyshakespeare with
``llmkit.tokenizers.BPETokenizer.train`` (incremental pair counts) and with
``llmkit.tokenizers.train_bpe_naive`` (recounts every pair after every merge), in the
same run, checks that both learn identical merges, and prints a table:

    implementation | merges | seconds | speed-up vs naive

Usage::

    python bench/bench_bpe.py [--vocab-size 1000] [--chars N] [--file PATH] [--repeat 1]

The text comes from ``--file`` if given, else ``llmkit.data.path("tinyshakespeare")``
(mirror, cache or download), else ``$LLMKIT_DATA_MIRROR/tinyshakespeare/input.txt``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

from llmkit.metrics import bytes_per_token
from llmkit.tokenizers import BPETokenizer, train_bpe_naive


def _default_file() -> Path:
    try:
        from llmkit.data import path as data_path
    except ImportError:
        data_path = None
    if data_path is not None:
        return Path(data_path("tinyshakespeare"))
    mirror = os.environ.get("LLMKIT_DATA_MIRROR")
    if not mirror:
        sys.exit("no data: pass --file PATH or set LLMKIT_DATA_MIRROR")
    return Path(mirror) / "tinyshakespeare" / "input.txt"


def _time(fn, repeat: int):
    best, result = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vocab-size", type=int, default=1000)
    parser.add_argument("--chars", type=int, default=None, help="use only the first N chars")
    parser.add_argument("--file", type=Path, default=None, help="training text (UTF-8)")
    parser.add_argument("--repeat", type=int, default=1, help="best of N runs for each")
    parser.add_argument("--skip-naive", action="store_true", help="time the incremental only")
    args = parser.parse_args(argv)

    file = args.file or _default_file()
    text = file.read_text(encoding="utf-8")
    if args.chars is not None:
        text = text[: args.chars]

    print(f"text: {file} ({len(text):,} chars, {len(text.encode()):,} bytes)")
    print(
        f"vocab_size: {args.vocab_size}; best of {args.repeat} run(s) each; "
        f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} cpus"
    )
    print()

    t_inc, tok = _time(lambda: BPETokenizer.train(text, args.vocab_size), args.repeat)
    rows = []
    if not args.skip_naive:
        t_naive, naive = _time(lambda: train_bpe_naive(text, args.vocab_size), args.repeat)
        if naive != tok.merges:
            first = next(
                (k for k, (a, b) in enumerate(zip(naive, tok.merges, strict=False)) if a != b),
                min(len(naive), len(tok.merges)),
            )
            sys.exit(f"MISMATCH: the trainers' merges differ first at merge {first}")
        rows.append(("train_bpe_naive (recount all pairs)", len(naive), t_naive, 1.0))
        rows.append(("BPETokenizer.train (incremental)", len(tok.merges), t_inc, t_naive / t_inc))
    else:
        rows.append(("BPETokenizer.train (incremental)", len(tok.merges), t_inc, float("nan")))

    header = ("implementation", "merges", "seconds", "speed-up vs naive")
    widths = [max(len(header[0]), *(len(r[0]) for r in rows)), 6, 8, 17]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for name, n, secs, speedup in rows:
        ratio = "-" if speedup != speedup else f"{speedup:.1f}x"  # nan: no naive run
        cells = [name.ljust(widths[0]), f"{n:>6}", f"{secs:>8.2f}", f"{ratio:>17}"]
        print("| " + " | ".join(cells) + " |")
    print()
    if not args.skip_naive:
        print("merges identical: yes")

    t0 = time.perf_counter()
    ids = tok.encode(text)
    t_enc = time.perf_counter() - t0
    assert tok.decode(ids) == text
    print(
        f"encode: {len(ids):,} tokens in {t_enc:.2f} s; "
        f"compression {bytes_per_token(text, len(ids)):.2f} bytes/token; round trip ok"
    )


if __name__ == "__main__":
    main()

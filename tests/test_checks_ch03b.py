"""Lab 03b's checks, beyond the generic tests of tests/test_checks.py: each catalogued slip
fails with its hint, and PyTorch's and llmkit's RMSNorm, rotary embeddings and key/value
repetition are off limits."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import llmkit.nn
from llmkit.course.checks import ch03b

# Answers, right and wrong, written out here: llmkit's objects and the checks' references
# are off limits.


def rms_norm(x, w, eps=1e-5, centre=False, reduce="mean", outside=False, gain=True):
    if centre:
        x = x - x.mean(-1, keepdim=True)
    ms = x.pow(2).mean(-1, keepdim=True) if reduce == "mean" else x.pow(2).sum(-1, keepdim=True)
    y = x / (ms.sqrt() + eps) if outside else x / (ms + eps).sqrt()
    return y * w if gain else y


def rope(x, positions, base=10000.0, layout="adjacent", sign=1, two=2, own=False):
    d, t = x.shape[-1], x.shape[-2]
    theta = base ** (-two * torch.arange(d // 2, dtype=torch.float64) / d)
    pos = torch.arange(t) if own else positions
    a = pos.double()[:, None] * theta
    c, s = a.cos().to(x.dtype), a.sin().to(x.dtype)
    if layout == "adjacent":
        x1, x2 = x[..., 0::2], x[..., 1::2]
    else:
        x1, x2 = x[..., : d // 2], x[..., d // 2 :]
    y1, y2 = x1 * c - sign * x2 * s, sign * x1 * s + x2 * c
    if layout == "adjacent":
        return torch.stack([y1, y2], -1).flatten(-2)
    return torch.cat([y1, y2], -1)


def with_(fn, **kw):
    return lambda *args, **kwargs: fn(*args, **kwargs, **kw)


SLIPS = [
    ("rms_norm", with_(rms_norm, centre=True), "do not subtract the mean"),
    ("rms_norm", with_(rms_norm, reduce="sum"), "mean of the squares"),
    ("rms_norm", with_(rms_norm, outside=True), "inside the square root"),
    ("rms_norm", with_(rms_norm, gain=False), "gain weight"),
    ("apply_rope", with_(rope, layout="rotate_half"), "rotate-half layout"),
    ("apply_rope", with_(rope, sign=-1), "the other way"),
    ("apply_rope", with_(rope, two=1), "factor 2"),
    ("apply_rope", with_(rope, own=True), "given positions"),
    ("repeat_kv", lambda x, n: x.repeat(1, n, 1, 1), "in a row"),
    ("repeat_kv", lambda x, n: x.repeat_interleave(n, dim=2), "not the positions"),
]


@pytest.mark.parametrize(("exercise", "wrong", "hint"), SLIPS)
def test_each_slip_fails_with_its_hint(exercise, wrong, hint, capsys):
    with pytest.raises(AssertionError, match=hint) as info:
        getattr(ch03b, f"check_{exercise}")(wrong, seed=0)
    assert str(info.value).startswith(f"{exercise}:")
    assert capsys.readouterr().out == ""


def test_right_answers_pass_also_in_float32():
    ch03b.check_rms_norm(lambda x, w, eps=1e-5: rms_norm(x.float(), w.float(), eps), seed=1)
    ch03b.check_apply_rope(lambda x, p, base=10000.0: rope(x.float(), p, base), seed=1)
    ch03b.check_repeat_kv(lambda x, n: x.repeat_interleave(n, dim=1), seed=1)


def _rms_llmkit(x, w, eps=1e-5):
    m = llmkit.nn.RMSNorm(x.shape[-1], eps=eps).to(x.dtype)
    m.weight.data = w.clone()
    return m(x)


def _rope_llmkit(x, positions, base=10000.0):
    inv = llmkit.nn.rope_frequencies(x.shape[-1], base=base).double()
    cos, sin = llmkit.nn.rope_angles(positions, inv)
    return llmkit.nn.apply_rope(x, cos, sin)


def _rope_angles_only(x, positions, base=10000.0):
    inv = llmkit.nn.rope_frequencies(x.shape[-1], base=base).double()
    return rope(x, positions, base) + 0 * inv.sum()


SHORTCUTS = [
    ("rms_norm", _rms_llmkit, "llmkit.nn"),
    ("rms_norm", lambda x, w, eps=1e-5: F.rms_norm(x, x.shape[-1:], w, eps), "rms_norm"),
    ("rms_norm", lambda x, w, eps=1e-5: torch.rms_norm(x, x.shape[-1:], w, eps), "rms_norm"),
    (
        "rms_norm",
        lambda x, w, eps=1e-5: torch.nn.RMSNorm(x.shape[-1], eps=eps, dtype=x.dtype)(x) * w,
        "RMSNorm",
    ),
    ("apply_rope", _rope_llmkit, "llmkit.nn"),
    ("apply_rope", _rope_angles_only, "llmkit.nn"),
    ("repeat_kv", llmkit.nn.repeat_kv, "llmkit.nn"),
]


@pytest.mark.parametrize(("exercise", "shortcut", "label"), SHORTCUTS)
def test_library_versions_are_off_limits(exercise, shortcut, label):
    with pytest.raises(AssertionError, match=f"must be written without .*{label}"):
        getattr(ch03b, f"check_{exercise}")(shortcut, seed=0)

"""Reference answers and known slips for lab 03b (modern decoders). See the package
docstring. Everything is written out here with plain torch: the checks name these
functions only as strings, and ``llmkit.nn`` is off limits in the lab."""

from __future__ import annotations

import torch


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """``x / sqrt(mean(x**2, last dim) + eps) * weight``."""
    return x / torch.sqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps) * weight


def rms_norm_centred(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Subtracts the mean first (LayerNorm without its bias)."""
    c = x - x.mean(dim=-1, keepdim=True)
    return c / torch.sqrt(c.pow(2).mean(dim=-1, keepdim=True) + eps) * weight


def rms_norm_sum(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Divides by the root of the *sum* of squares (the length of the vector)."""
    return x / torch.sqrt(x.pow(2).sum(dim=-1, keepdim=True) + eps) * weight


def rms_norm_eps_outside(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Adds eps after the square root."""
    return x / (torch.sqrt(x.pow(2).mean(dim=-1, keepdim=True)) + eps) * weight


def rms_norm_no_weight(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Forgets the gain."""
    return x / torch.sqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps)


def _angles(positions: torch.Tensor, d: int, base: float, dtype, exponent: int = 2):
    i = torch.arange(d // 2, dtype=torch.float64)
    theta = base ** (-exponent * i / d)
    angles = positions.to(torch.float64)[:, None] * theta  # (t, d/2)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def _rotate(x, cos, sin, layout: str = "adjacent", sign: int = 1) -> torch.Tensor:
    d = x.shape[-1]
    if layout == "adjacent":
        x1, x2 = x[..., 0::2], x[..., 1::2]
    else:
        x1, x2 = x[..., : d // 2], x[..., d // 2 :]
    y1 = x1 * cos - sign * x2 * sin
    y2 = sign * x1 * sin + x2 * cos
    if layout == "adjacent":
        return torch.stack([y1, y2], dim=-1).flatten(-2)
    return torch.cat([y1, y2], dim=-1)


def apply_rope(x: torch.Tensor, positions: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Rotary embeddings, adjacent pairs ``(x[2i], x[2i+1])`` turned by ``p * base**(-2i/d)``."""
    cos, sin = _angles(positions, x.shape[-1], base, x.dtype)
    return _rotate(x, cos, sin)


def apply_rope_rotate_half(x, positions, base=10000.0):
    """Pairs ``(x[i], x[i + d/2])``: Hugging Face's layout."""
    cos, sin = _angles(positions, x.shape[-1], base, x.dtype)
    return _rotate(x, cos, sin, layout="rotate_half")


def apply_rope_backwards(x, positions, base=10000.0):
    """Rotates by minus the angle (the signs of the sines swapped)."""
    cos, sin = _angles(positions, x.shape[-1], base, x.dtype)
    return _rotate(x, cos, sin, sign=-1)


def apply_rope_wrong_exponent(x, positions, base=10000.0):
    """``theta_i = base ** (-i / d)``: the factor 2 forgotten."""
    cos, sin = _angles(positions, x.shape[-1], base, x.dtype, exponent=1)
    return _rotate(x, cos, sin)


def apply_rope_own_positions(x, positions, base=10000.0):
    """Ignores ``positions`` and rotates by ``0 .. t-1``."""
    t = x.shape[-2]
    cos, sin = _angles(torch.arange(t), x.shape[-1], base, x.dtype)
    return _rotate(x, cos, sin)


def repeat_kv_tiled(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """The whole stack of heads repeated: heads g0, g1, g2, g0, g1, g2, ..."""
    return x.repeat(1, n_rep, 1, 1)


def repeat_kv_positions(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """The positions repeated instead of the heads."""
    return x.repeat_interleave(n_rep, dim=2)

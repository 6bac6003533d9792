"""The simplest GPT in plain PyTorch: the yardstick for llmkit's training step.

One page, no checks, no caches, no options but the sizes: token and position
embeddings, pre-LayerNorm blocks (fused query/key/value projection, causal
``scaled_dot_product_attention``, a 4x MLP with GPT-2's tanh GELU), a final LayerNorm,
and an output layer tied to the token embedding. ``PlainGPT.load_gpt2(state_dict)``
takes the Hugging Face GPT-2 layout that :meth:`llmkit.gpt.GPT.to_hf_gpt2_state_dict`
writes, so every benchmark row runs on the same weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PlainBlock(nn.Module):
    def __init__(self, d: int, n_head: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.up, self.down = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (b, t, d)
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
        q, k, v = (z.view(b, t, self.n_head, d // self.n_head).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (b, h, t, d/h)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, d))
        return x + self.down(F.gelu(self.up(self.ln2(x)), approximate="tanh"))


class PlainGPT(nn.Module):
    def __init__(self, vocab_size: int, block_size: int, n_layer: int, n_head: int, d: int):
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab_size, d), nn.Embedding(block_size, d)
        self.blocks = nn.ModuleList(PlainBlock(d, n_head) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(d)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # ids: (b, t) -> logits (b, t, V)
        x = self.tok(ids) + self.pos(torch.arange(ids.shape[1], device=ids.device))
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x) @ self.tok.weight.T

    @torch.no_grad()
    def load_gpt2(self, sd: dict[str, torch.Tensor]) -> PlainGPT:
        """Copy a Hugging Face GPT-2 state dict (Conv1D weights are ``(in, out)``)."""
        self.tok.weight.copy_(sd["transformer.wte.weight"])
        self.pos.weight.copy_(sd["transformer.wpe.weight"])
        self.ln_f.weight.copy_(sd["transformer.ln_f.weight"])
        self.ln_f.bias.copy_(sd["transformer.ln_f.bias"])
        for i, block in enumerate(self.blocks):
            p = f"transformer.h.{i}."
            pairs = [
                (block.ln1, "ln_1", False),
                (block.ln2, "ln_2", False),
                (block.qkv, "attn.c_attn", True),
                (block.proj, "attn.c_proj", True),
                (block.up, "mlp.c_fc", True),
                (block.down, "mlp.c_proj", True),
            ]
            for module, name, conv1d in pairs:
                weight = sd[p + name + ".weight"]
                module.weight.copy_(weight.T if conv1d else weight)
                module.bias.copy_(sd[p + name + ".bias"])
        return self

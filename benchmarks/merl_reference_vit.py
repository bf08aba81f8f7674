"""MERL's bare ECG encoder, rebuilt for speed comparison only (no weights, no training code).

The reference is the 1-D ViT that MERL (Liu et al., "Zero-Shot ECG Classification with Multimodal
Learning and Test-time Clinical Knowledge Enhancement", ICML 2024) uses as its ECG encoder, as its
public repository describes it (github.com/cheliu-computation/MERL-ICML2024, `utils/vit1d.py`,
`vit_tiny`): a bias-free Conv1d patch embedding of 50 samples over all 12 leads (5000 samples ->
100 tokens), learned position embeddings, 12 pre-norm transformer blocks of width 192 with 3 heads
of 64 dimensions (one fused QKV projection with bias; attention as matmul, softmax, matmul; an
output projection) and a GELU MLP of width 768, then the mean over tokens and a LayerNorm. No
attention mask and no text side. This file is written from that description; it shares no code
with MERL's.

``benchmarks/bench_model.py`` runs it beside SuPreME's encoder + fusion in the same process so
that the two are compared under the same load.
"""

from __future__ import annotations

import torch
from torch import nn


class ReferenceAttention(nn.Module):
    def __init__(self, width: int, heads: int, head_dim: int):
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        self.qkv = nn.Linear(width, 3 * heads * head_dim)
        self.out = nn.Linear(heads * head_dim, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = x.shape
        q, k, v = self.qkv(x).view(batch, tokens, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        weights = torch.matmul(q, k.transpose(-1, -2)).mul(self.head_dim**-0.5).softmax(dim=-1)
        return self.out(torch.matmul(weights, v).transpose(1, 2).reshape(batch, tokens, -1))


class ReferenceBlock(nn.Module):
    def __init__(self, width: int, heads: int, head_dim: int, mlp_width: int):
        super().__init__()
        self.attention_norm = nn.LayerNorm(width)
        self.attention = ReferenceAttention(width, heads, head_dim)
        self.mlp_norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, mlp_width), nn.GELU(), nn.Linear(mlp_width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x))
        return x + self.mlp(self.mlp_norm(x))


class ReferenceViT1d(nn.Module):
    """The layout of MERL's ``vit_tiny`` by default (5.5M parameters)."""

    def __init__(self, leads: int = 12, samples: int = 5000, patch: int = 50, width: int = 192, depth: int = 12,
                 heads: int = 3, head_dim: int = 64, mlp_width: int = 768):
        super().__init__()
        self.patch_embedding = nn.Conv1d(leads, width, kernel_size=patch, stride=patch, bias=False)
        self.positions = nn.Parameter(torch.randn(1, samples // patch, width) * 0.02)
        self.blocks = nn.Sequential(*(ReferenceBlock(width, heads, head_dim, mlp_width) for _ in range(depth)))
        self.norm = nn.LayerNorm(width)

    def forward(self, signals: torch.Tensor) -> torch.Tensor:
        tokens = self.patch_embedding(signals).transpose(1, 2) + self.positions
        return self.norm(self.blocks(tokens).mean(dim=1))


__all__ = ["ReferenceViT1d"]

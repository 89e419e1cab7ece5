"""Decoder-only transformer (GPT-style, pre-LayerNorm) and its configuration, including the named model sizes,
and the KV cache that incremental decoding writes into."""

import contextlib
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from src.data import IGNORE_INDEX


@dataclass
class ModelConfig:
    vocab_size: int = 13
    max_length: int = 32
    num_layers: int = 4
    hidden_size: int = 256
    num_heads: int = 4
    ffn_size: int = 512
    dropout: float = 0.0


# Shapes from the seed README's table; "tiny" is for tests and smoke runs.
MODEL_SIZES = {
    "tiny": dict(num_layers=2, hidden_size=64, num_heads=2, ffn_size=128),
    "small": dict(num_layers=4, hidden_size=256, num_heads=4, ffn_size=512),
    "medium": dict(num_layers=6, hidden_size=512, num_heads=8, ffn_size=1024),
    "large": dict(num_layers=8, hidden_size=512, num_heads=8, ffn_size=2048),
}


class KVCache:
    """Keys and values of every layer for one batch being decoded: fixed-size buffers, filled from position 0.

    The prompt is written in one call (causal attention within it), then one token per call."""

    def __init__(self, config, batch_size, device):
        self.shape = (config.num_layers, batch_size, config.num_heads, config.max_length,
                      config.hidden_size // config.num_heads)
        self.device = device
        self.keys = self.values = None  # allocated on first use, in the dtype the model computes in
        self.length = 0  # positions filled so far

    def update(self, layer, keys, values):
        """Stores this layer's keys/values for the new positions; returns those of all positions so far."""
        if self.keys is None:
            self.keys = torch.zeros(self.shape, dtype=keys.dtype, device=self.device)
            self.values = torch.zeros(self.shape, dtype=values.dtype, device=self.device)
        end = self.length + keys.shape[2]
        self.keys[layer, :, :, self.length:end] = keys
        self.values[layer, :, :, self.length:end] = values
        return self.keys[layer, :, :, :end], self.values[layer, :, :, :end]


def attention_kernels(query):
    """Under bf16/fp16 on CPU, the math path (plain matmuls + softmax): the CPU flash kernel's backward is ~30x
    slower there at these short lengths (README, Speed). Otherwise PyTorch's own choice (flash on CPU in fp32)."""
    if query.device.type == "cpu" and query.dtype != torch.float32:
        return sdpa_kernel(SDPBackend.MATH)
    return contextlib.nullcontext()


class CausalSelfAttention(nn.Module):
    def __init__(self, config, layer_index):
        super().__init__()
        self.num_heads = config.num_heads
        self.layer_index = layer_index
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = config.dropout

    def forward(self, x, cache=None):
        batch, length, hidden = x.shape
        q, k, v = self.qkv(x).split(hidden, dim=2)
        q, k, v = (t.view(batch, length, self.num_heads, hidden // self.num_heads).transpose(1, 2) for t in (q, k, v))
        # Causal within the new positions; a single new token attends to everything cached before it.
        is_causal = length > 1
        if cache is not None:
            if cache.length and length > 1:
                raise ValueError("a KV cache takes the prompt in one call and then one token per call")
            k, v = cache.update(self.layer_index, k, v)
        with attention_kernels(q):
            y = F.scaled_dot_product_attention(q, k, v, is_causal=is_causal,
                                               dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(batch, length, hidden))


class Block(nn.Module):
    def __init__(self, config, layer_index):
        super().__init__()
        self.ln_attention = nn.LayerNorm(config.hidden_size)
        self.attention = CausalSelfAttention(config, layer_index)
        self.ln_mlp = nn.LayerNorm(config.hidden_size)
        self.mlp = nn.Sequential(
            nn.Linear(config.hidden_size, config.ffn_size),
            nn.GELU(),
            nn.Linear(config.ffn_size, config.hidden_size),
        )
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x, cache=None):
        x = x + self.dropout(self.attention(self.ln_attention(x), cache))
        return x + self.dropout(self.mlp(self.ln_mlp(x)))


class Transformer(nn.Module):
    def __init__(self, config):
        super().__init__()
        if config.hidden_size % config.num_heads:
            raise ValueError(f"hidden_size {config.hidden_size} is not divisible by num_heads {config.num_heads}")
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.hidden_size)
        self.position_embedding = nn.Embedding(config.max_length, config.hidden_size)
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config, index) for index in range(config.num_layers))
        self.ln_final = nn.LayerNorm(config.hidden_size)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.lm_head.weight = self.token_embedding.weight  # weight tying, as in GPT-2
        self.apply(self._init_weights)
        # GPT-2's scaled init of the projections that write into the residual stream.
        for name, parameter in self.named_parameters():
            if name.endswith("proj.weight") or name.endswith("mlp.2.weight"):
                nn.init.normal_(parameter, mean=0.0, std=0.02 / math.sqrt(2 * config.num_layers))

    @staticmethod
    def _init_weights(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def num_parameters(self):
        return sum(p.numel() for p in self.parameters())

    def forward(self, idx, targets=None, cache=None):
        """idx: [batch, length] token ids, continuing what `cache` holds if one is given.
        Returns (logits [batch, length, vocab], mean loss over non-ignored targets or None)."""
        start = cache.length if cache is not None else 0
        end = start + idx.shape[1]
        if end > self.config.max_length:
            raise ValueError(f"sequence of {end} tokens exceeds the model's max_length {self.config.max_length} "
                             f"(set --max-length when training)")
        positions = torch.arange(start, end, device=idx.device)
        x = self.dropout(self.token_embedding(idx) + self.position_embedding(positions))
        for block in self.blocks:
            x = block(x, cache)
        if cache is not None:
            cache.length = end
        logits = self.lm_head(self.ln_final(x))
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX)
        return logits, loss


def build_model_config(model_size, vocab_size, max_length, dropout=0.0):
    if model_size not in MODEL_SIZES:
        raise ValueError(f"unknown model size {model_size!r}; choose from {', '.join(MODEL_SIZES)}")
    return ModelConfig(vocab_size=vocab_size, max_length=max_length, dropout=dropout, **MODEL_SIZES[model_size])

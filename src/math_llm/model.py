"""Decoder-only transformer (GPT-style, pre-LayerNorm) and its configuration: the named model sizes, the position
encodings (learned absolute, rotary, digit places) and the KV cache that incremental decoding writes into. It knows
no task: the tokens the digit places count come in through ModelConfig.
"""

import contextlib
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from math_llm.errors import ConfigError
from math_llm.flags import choice_problems, option

IGNORE_INDEX = -100  # targets the loss skips (the data marks prompt tokens and padding with it)
POS_ENCODINGS = {
    "learned": "a learned vector per sequence position, as GPT-2 (the default); nothing past the max length",
    "rope": "rotary embeddings (RoPE) on queries and keys, by sequence position; no length limit",
    "abacus": "a fixed random vector per digit place, counted within each number from its first digit (the least "
              "significant in the operand-reversed formats), with a random offset per training example so that places "
              "beyond the longest trained number are trained too (Abacus, McLeish et al. 2024; position "
              "coupling, Cho et al. 2024), and an attention penalty growing with the distance between two digits' "
              "places; no other position signal",
}
# Shapes from the seed README's table; "tiny" is for tests and smoke runs.
MODEL_SIZES = {
    "tiny": dict(num_layers=2, hidden_size=64, num_heads=2, ffn_size=128),
    "small": dict(num_layers=4, hidden_size=256, num_heads=4, ffn_size=512),
    "medium": dict(num_layers=6, hidden_size=512, num_heads=8, ffn_size=1024),
    "large": dict(num_layers=8, hidden_size=512, num_heads=8, ffn_size=2048),
}
ROPE_BASE = 10_000.0
# The most attention scores ([batch, heads, queries, keys] elements, 256 MiB in fp32) one evaluation batch holds
ATTENTION_SCORES_LIMIT = 1 << 26
NORMS = ("layernorm", "rmsnorm")
MLPS = ("gelu", "swiglu")


@dataclass
class ModelConfig:
    model_size: str = option("small", "model shape: layers, width, heads and feed-forward width, see docs/usage.md",
                             choices=MODEL_SIZES)
    num_layers: int | None = option(None, "transformer blocks (default: those of --model-size)")
    hidden_size: int | None = option(None, "width of the residual stream (default: that of --model-size)")
    num_heads: int | None = option(None, "attention heads, dividing --hidden-size (default: those of --model-size)")
    ffn_size: int | None = option(None, "width of the MLP's hidden layer (default: that of --model-size)")
    head_dim: int | None = option(None, "width of each attention head (default: --hidden-size / --num-heads); "
                                        "queries, keys and values are --num-heads x this wide")
    norm: str = option("layernorm", "the normalisation before each sublayer and the head", choices=NORMS)
    mlp: str = option("gelu", "the feed-forward layer: gelu (two matrices, GELU between) or swiglu (a SiLU-gated "
                              "pair in, one out: three matrices)", choices=MLPS)
    bias: bool = option(True, "biases in the linear layers and the norms; --no-bias: none")
    tie_embeddings: bool = option(True, "the output head reuses the token embedding (counted once); "
                                        "--no-tie-embeddings: a head of its own")
    rank: int | None = option(None, "low rank: each linear layer of the blocks is a product of two thin matrices "
                                    "(in x R, then R x out), where R is below both of its sides (default: full rank)")
    max_length: int = option(32, "longest example in tokens; longer ones are an error")
    dropout: float = option(0.0, "dropout rate")
    pos_encoding: str = option("learned", "; ".join(f"{name}: {text}" for name, text in POS_ENCODINGS.items()),
                               choices=POS_ENCODINGS)
    digit_positions: int = option(128, "abacus: size of the digit-place table; training spreads the places of its "
                                       "numbers over all of it, and evaluation reads additions of up to this - 3 "
                                       "digits (the answer has a digit more, and the = takes place 1)")
    place_bias: bool = option(True, "abacus: an attention penalty for the distance between digit places; "
                                    "--no-place-bias: the digit-place vectors alone, as the Abacus paper (generalises "
                                    "far less, see recipes/lengthgen_abacus_no_place_bias.yaml)")
    # Set from the data's vocabulary when a run starts (Tokenizer.digit_place_ids): not flags
    vocab_size: int = 13
    digit_ids: tuple = ()  # abacus: the tokens it counts as digits
    answer_start_id: int = -1  # abacus: the token that starts the answer's count ("=")
    sign_id: int = -1  # abacus: a sign right after the answer start shares its place ("-")

    def __post_init__(self):
        if problems := choice_problems(self):  # the size's shape and the rules below need valid choices
            raise ConfigError("; ".join(problems))
        for name, value in MODEL_SIZES[self.model_size].items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        self.digit_ids = tuple(self.digit_ids)
        problems = [f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}"
                    for name in ("num_layers", "hidden_size", "num_heads", "ffn_size", "max_length")
                    if getattr(self, name) < 1]
        if self.head_dim is not None and self.head_dim < 1 or self.rank is not None and self.rank < 1:
            problems.append("--head-dim and --rank must be at least 1")
        if not problems and self.head_dim is None and self.hidden_size % self.num_heads:
            problems.append(f"--hidden-size {self.hidden_size} is not divisible by --num-heads {self.num_heads} "
                            f"(or give --head-dim)")
        if not 0 <= self.dropout < 1:
            problems.append(f"--dropout must be in [0, 1), got {self.dropout}")
        if self.digit_positions < 2:
            problems.append(f"--digit-positions must be at least 2, got {self.digit_positions}")
        if not problems and self.pos_encoding == "rope" and self.attention_head_size % 2:
            problems.append(f"--pos-encoding rope needs an even head width, got {self.attention_head_size}")
        if not self.place_bias and self.pos_encoding != "abacus":
            problems.append("--no-place-bias applies to --pos-encoding abacus only")
        if problems:
            raise ConfigError("; ".join(problems))

    @property
    def attention_head_size(self):
        return self.head_dim or self.hidden_size // self.num_heads

    @property
    def shape_text(self):
        """'2 layers, width 64, 2 heads of 32, feed-forward 128 (gelu), layernorm', and the options that leave
        GPT-2's block (no biases, an untied head, low rank)."""
        options = [text for text, chosen in (("no biases", not self.bias), ("untied head", not self.tie_embeddings),
                                             (f"rank {self.rank}", self.rank)) if chosen]
        return ", ".join([f"{self.num_layers} layer{'s' * (self.num_layers != 1)}", f"width {self.hidden_size}",
                          f"{self.num_heads} head{'s' * (self.num_heads != 1)} of {self.attention_head_size}",
                          f"feed-forward {self.ffn_size} ({self.mlp})", self.norm, *options])


class KVCache:
    """Keys and values of every layer for one batch being decoded: fixed-size buffers of `max_tokens` positions,
    filled from position 0, and for the abacus encoding the digit places of the tokens so far and the last token.

    The prompt is written in one call (causal attention within it), then one token per call."""

    def __init__(self, config, batch_size, device, max_tokens=None):
        self.shape = (config.num_layers, batch_size, config.num_heads, max_tokens or config.max_length,
                      config.attention_head_size)
        self.device = device
        self.keys = self.values = None  # allocated on first use, in the dtype the model computes in
        self.length = 0  # positions filled so far
        self.last_digit_place = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.last_token = torch.full((batch_size,), -1, device=device)
        self.places = torch.zeros(batch_size, self.shape[3], dtype=torch.long, device=device)  # of cached tokens

    def update(self, layer, keys, values):
        """Stores this layer's keys/values for the new positions; returns those of all positions so far."""
        if self.keys is None:
            self.keys = torch.zeros(self.shape, dtype=keys.dtype, device=self.device)
            self.values = torch.zeros(self.shape, dtype=values.dtype, device=self.device)
        end = self.length + keys.shape[2]
        if end > self.shape[3]:
            raise ValueError(f"the KV cache holds {self.shape[3]} positions; {end} were asked for")
        self.keys[layer, :, :, self.length:end] = keys
        self.values[layer, :, :, self.length:end] = values
        return self.keys[layer, :, :, :end], self.values[layer, :, :, :end]


class DigitPlaces(nn.Module):
    """The abacus index of each token: 1, 2, 3... along the digits of each number, 0 for operators and the like.

    The answer-start token ("=") starts the answer's count at 1, so that the token predicting the answer's k-th
    digit has place k, the place of the operand digits it needs (coupled positions); a negative answer's sign shares
    the place of the "=" for the same reason. In the operand-reversed formats place 1 is the least significant digit
    of every number. Which tokens are digits, answer start and sign comes from the config."""

    def __init__(self, config):
        super().__init__()
        if not config.digit_ids:
            raise ValueError("ModelConfig.digit_ids is empty: the abacus encoding has no digits to count")
        is_digit = torch.zeros(config.vocab_size, dtype=torch.bool)
        is_digit[list(config.digit_ids)] = True
        self.register_buffer("is_digit", is_digit, persistent=False)  # derived from the config, never saved
        self.answer_start_id, self.sign_id = config.answer_start_id, config.sign_id

    def forward(self, idx, last_place=None, last_token=None):
        """idx: [batch, length] token ids. `last_place`, `last_token` [batch]: the place and id of the token before
        idx[:, 0] (incremental decoding); none means idx starts the sequence."""
        batch, length = idx.shape
        steps = torch.arange(length, device=idx.device)
        last_place = torch.zeros(batch, dtype=torch.long, device=idx.device) if last_place is None else last_place
        last_token = torch.full((batch,), -1, device=idx.device) if last_token is None else last_token
        is_answer_start = idx == self.answer_start_id
        follows_answer_start = torch.cat([last_token[:, None], idx[:, :-1]], dim=1) == self.answer_start_id
        is_sign = (idx == self.sign_id) & follows_answer_start
        counted = self.is_digit[idx] | is_answer_start | is_sign
        after_counted = torch.cat([last_place[:, None] > 0, counted[:, :-1]], dim=1)
        starts = is_answer_start | (counted & ~after_counted)
        last_start = torch.cummax(torch.where(starts, steps, -1), dim=1).values
        advancing = (counted & ~is_sign).long()  # the tokens that move the count on
        advanced = advancing.cumsum(dim=1)
        before_start = torch.gather(advanced - advancing, 1, last_start.clamp(min=0))
        # A count that began before this chunk continues from last_place
        places = torch.where(last_start >= 0, advanced - before_start, last_place[:, None] + advanced)
        return torch.where(counted, places, 0)


def random_place_offsets(places, table_size):
    """Places shifted by one random offset per example (0 stays 0), as large as the table allows: training sees
    every place up to table_size - 1, so numbers longer than any trained one land on trained places."""
    room = table_size - 1 - places.max(dim=1).values  # >= 0: training data is checked to fit
    offsets = (torch.rand(places.shape[0], device=places.device) * (room + 1)).long()
    return torch.where(places > 0, places + offsets[:, None], 0)


def place_distance_bias(query_places, key_places, num_heads):
    """Additive attention scores [batch, heads, queries, keys]: -slope x |place distance| between two digits, with
    slopes 1, 1/2, 1/4... per head (ALiBi's penalty, over digit places instead of sequence positions); 0 where
    either token has no place (operators; "=" and a sign have one), -inf for keys after the query (causal). The
    queries are the last of the keys.

    Digits of distant places then cannot crowd out the digits of the query's own column in a number of any
    length: without it, numbers a few digits longer than any trained one already failed (recipes
    lengthgen_abacus and lengthgen_abacus_no_place_bias)."""
    num_queries, num_keys = query_places.shape[1], key_places.shape[1]
    digits = (query_places[:, :, None] > 0) & (key_places[:, None, :] > 0)
    # In float from the start and in place: at long lengths these [batch, queries, keys] tensors are the memory
    distance = (query_places.float()[:, :, None] - key_places.float()[:, None, :]).abs_().mul_(digits)
    slopes = 0.5 ** torch.arange(num_heads, device=query_places.device, dtype=torch.float32)
    future = torch.ones(num_queries, num_keys, dtype=torch.bool, device=query_places.device).triu(
        num_keys - num_queries + 1)
    return (distance[:, None] * -slopes[:, None, None]).masked_fill_(future, float("-inf"))


def batch_rows(config, batch_size, num_tokens):
    """How many sequences of `num_tokens` one evaluation batch of a model with this config takes: `batch_size`, or
    fewer where their attention scores (and the abacus bias, both [batch, heads, tokens, tokens]) would pass
    ATTENTION_SCORES_LIMIT. Memory then stops growing with the square of the length: evaluating 200-digit additions
    peaks at 0.5 GB where full batches take 1.2 GB (docs/speed.md, "Memory at long lengths")."""
    return max(1, min(batch_size, ATTENTION_SCORES_LIMIT // (config.num_heads * num_tokens ** 2)))


def rotary_angles(start, end, head_size, device):
    """(cos, sin), each [end - start, head_size / 2], of the rotations RoPE applies at these positions."""
    frequencies = ROPE_BASE ** (-torch.arange(0, head_size, 2, device=device, dtype=torch.float32) / head_size)
    angles = torch.arange(start, end, device=device, dtype=torch.float32)[:, None] * frequencies
    return angles.cos(), angles.sin()


def rotate(x, cos, sin):
    """RoPE on x [batch, heads, length, head_size]: each pair (x_i, x_{i + head_size/2}) rotated by its angle."""
    first, second = x.chunk(2, dim=-1)
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat([first * cos - second * sin, first * sin + second * cos], dim=-1)


def attention_kernels(query):
    """Under bf16/fp16 on CPU, the math path (plain matmuls + softmax): the CPU flash kernel's backward is ~30x
    slower there at these short lengths (docs/speed.md). Otherwise PyTorch's own choice (flash on CPU in fp32)."""
    if query.device.type == "cpu" and query.dtype != torch.float32:
        return sdpa_kernel(SDPBackend.MATH)
    return contextlib.nullcontext()


class LowRankLinear(nn.Sequential):
    """A linear layer as the product of two thin ones: in x R without a bias, then R x out (--rank R)."""

    def __init__(self, in_features, out_features, rank, bias):
        super().__init__(nn.Linear(in_features, rank, bias=False), nn.Linear(rank, out_features, bias=bias))
        self.rank = rank

    def init_weights(self, std):
        """Both factors at sqrt(std / sqrt(R)), so that their product starts with the spread of a full layer's
        weights at `std`. Both at `std` would start it std x sqrt(R) times smaller (0.0008 for 0.02 at rank 4): a
        model too close to zero to learn (recipes/adder_shapes.yaml's low-rank shapes stayed at 0% that way)."""
        for factor in self:
            nn.init.normal_(factor.weight, mean=0.0, std=math.sqrt(std / math.sqrt(self.rank)))


def linear(in_features, out_features, config):
    """A linear layer of the blocks: full rank, or with --rank R below both sides, a LowRankLinear, R(in + out)
    weights where a full one has in x out."""
    if config.rank is None or config.rank >= min(in_features, out_features):
        return nn.Linear(in_features, out_features, bias=config.bias)
    return LowRankLinear(in_features, out_features, config.rank, config.bias)


def norm(config):
    if config.norm == "rmsnorm":
        return nn.RMSNorm(config.hidden_size)  # a gain and no bias whatever --bias says: RMSNorm has none
    return nn.LayerNorm(config.hidden_size, bias=config.bias)


def residual_output(layer):
    """Marks the layer that writes into the residual stream, for GPT-2's scaled initialisation."""
    layer.writes_residual = True
    return layer


class SwiGLU(nn.Module):
    """SiLU(x W_gate) * (x W_up), then W_down (Shazeer 2020): three matrices where GELU's MLP has two."""

    def __init__(self, config):
        super().__init__()
        self.gate = linear(config.hidden_size, config.ffn_size, config)
        self.up = linear(config.hidden_size, config.ffn_size, config)
        self.down = residual_output(linear(config.ffn_size, config.hidden_size, config))

    def forward(self, x):
        return self.down(F.silu(self.gate(x)) * self.up(x))


def feed_forward(config):
    if config.mlp == "swiglu":
        return SwiGLU(config)
    return nn.Sequential(linear(config.hidden_size, config.ffn_size, config), nn.GELU(),
                         residual_output(linear(config.ffn_size, config.hidden_size, config)))


class CausalSelfAttention(nn.Module):
    def __init__(self, config, layer_index):
        super().__init__()
        self.num_heads, self.head_size = config.num_heads, config.attention_head_size
        self.layer_index = layer_index
        width = config.num_heads * config.attention_head_size
        self.qkv = linear(config.hidden_size, 3 * width, config)
        self.proj = residual_output(linear(width, config.hidden_size, config))
        self.dropout = config.dropout

    def forward(self, x, cache=None, rotary=None, bias=None):
        """`rotary`: RoPE's (cos, sin) for these positions; `bias`: additive attention scores that already hold the
        causal mask (place_distance_bias)."""
        batch, length, _ = x.shape
        width = self.num_heads * self.head_size
        q, k, v = self.qkv(x).split(width, dim=2)
        q, k, v = (t.view(batch, length, self.num_heads, self.head_size).transpose(1, 2) for t in (q, k, v))
        if rotary is not None:
            q, k = rotate(q, *rotary), rotate(k, *rotary)
        # Causal within the new positions; a single new token attends to everything cached before it.
        is_causal = length > 1
        if cache is not None:
            if cache.length and length > 1:
                raise ValueError("a KV cache takes the prompt in one call and then one token per call")
            k, v = cache.update(self.layer_index, k, v)
        with attention_kernels(q):
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=None if bias is None else bias.to(q.dtype),
                                               is_causal=is_causal and bias is None,
                                               dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(batch, length, width))


class Block(nn.Module):
    def __init__(self, config, layer_index):
        super().__init__()
        self.ln_attention = norm(config)
        self.attention = CausalSelfAttention(config, layer_index)
        self.ln_mlp = norm(config)
        self.mlp = feed_forward(config)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x, cache=None, rotary=None, bias=None):
        x = x + self.dropout(self.attention(self.ln_attention(x), cache, rotary, bias))
        return x + self.dropout(self.mlp(self.ln_mlp(x)))


class Transformer(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.hidden_size)
        if config.pos_encoding == "learned":
            self.position_embedding = nn.Embedding(config.max_length, config.hidden_size)
        elif config.pos_encoding == "abacus":
            self.digit_places = DigitPlaces(config)
            # Fixed random codes, not trained: a learned table left the loss plateau later and less reliably, and
            # its first places were the least trained (DESIGN.md, Model). A buffer, so it is saved with the weights.
            self.register_buffer("digit_place_codes", 0.02 * torch.randn(config.digit_positions, config.hidden_size))
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config, index) for index in range(config.num_layers))
        self.ln_final = norm(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.token_embedding.weight  # weight tying, as in GPT-2
        self.apply(self._init_weights)
        # GPT-2's scaled init of the projections that write into the residual stream; low-rank layers as a whole.
        for module in self.modules():
            std = 0.02 / math.sqrt(2 * config.num_layers) if getattr(module, "writes_residual", False) else 0.02
            if isinstance(module, LowRankLinear):
                module.init_weights(std)
            elif getattr(module, "writes_residual", False):
                nn.init.normal_(module.weight, mean=0.0, std=std)

    @staticmethod
    def _init_weights(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def num_parameters(self):
        """Unique trained parameters, as AdderBoard counts them: a tied weight once, fixed buffers (the abacus
        codes) not at all."""
        return sum(p.numel() for p in self.parameters())

    @property
    def max_tokens(self):
        """The longest sequence this model can read: its learned position table, else no limit (None)."""
        return self.config.max_length if self.config.pos_encoding == "learned" else None

    def reading_error(self, num_tokens, highest_place=0):
        """Why a sequence of `num_tokens` whose highest digit place is `highest_place` is more than this model can
        read (None if it is not): the one place where its limits are checked."""
        if self.max_tokens is not None and num_tokens > self.max_tokens:
            return (f"{num_tokens} tokens, more than the max_length of {self.max_tokens} (train.py --max-length)")
        if self.config.pos_encoding == "abacus" and highest_place >= self.config.digit_positions:
            return (f"a number that reaches digit place {highest_place}, beyond the model's "
                    f"{self.config.digit_positions - 1} (train.py --digit-positions)")
        return None

    @torch.no_grad()
    def unreadable(self, tokens, lengths, rows_per_chunk=65_536):
        """Yields (index, reason) for each of these sequences (`tokens` [examples, length], each `lengths` long) that
        this model cannot read. In chunks: a training split may be large."""
        device = self.token_embedding.weight.device
        for start in range(0, len(tokens), rows_per_chunk):
            rows = tokens[start:start + rows_per_chunk]
            highest = (self.digit_places(rows.to(device)).amax(dim=1) if self.config.pos_encoding == "abacus"
                       else torch.zeros(len(rows), dtype=torch.long))
            for index, (length, place) in enumerate(zip(lengths[start:start + len(rows)].tolist(), highest.tolist())):
                if reason := self.reading_error(length, place):
                    yield start + index, reason

    def embed(self, idx, start, cache):
        """Token embeddings plus this encoding's position signal; RoPE's angles and the abacus attention bias (each
        None where it does not apply)."""
        x = self.token_embedding(idx)
        end = start + idx.shape[1]
        encoding = self.config.pos_encoding
        if encoding == "learned":
            if error := self.reading_error(end):
                raise ValueError(f"a sequence of {error}")
            return x + self.position_embedding(torch.arange(start, end, device=idx.device)), None, None
        if encoding == "rope":
            return x, rotary_angles(start, end, self.config.attention_head_size, idx.device), None
        places = self.digit_places(idx, *((cache.last_digit_place, cache.last_token) if cache is not None else ()))
        key_places = places
        if cache is not None:
            cache.last_digit_place, cache.last_token = places[:, -1], idx[:, -1]
            cache.places[:, start:end] = places
            key_places = cache.places[:, :end]
        bias = place_distance_bias(places, key_places, self.config.num_heads) if self.config.place_bias else None
        if self.training:  # distances within an example do not change with its offset
            places = random_place_offsets(places, self.config.digit_positions)
        elif error := self.reading_error(0, int(places.max())):  # a host sync, in evaluation only
            raise ValueError(f"the input has {error}")
        return x + self.digit_place_codes[places], None, bias

    def forward(self, idx, targets=None, cache=None):
        """idx: [batch, length] token ids, continuing what `cache` holds if one is given. Returns (logits [batch,
        length, vocab], the mean loss over the targets that are not IGNORE_INDEX, or None without targets)."""
        return self.head(self.hidden_states(idx, cache), targets)

    def hidden_states(self, idx, cache=None):
        """The last block's output at every position, before the final LayerNorm (what a probe may read)."""
        start = cache.length if cache is not None else 0
        x, rotary, bias = self.embed(idx, start, cache)
        x = self.dropout(x)
        for block in self.blocks:
            x = block(x, cache, rotary, bias)
        if cache is not None:
            cache.length = start + idx.shape[1]
        return x

    def head(self, hidden, targets=None):
        """(logits, loss) from hidden_states' output."""
        logits = self.lm_head(self.ln_final(hidden))
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.float().view(-1, logits.shape[-1]), targets.reshape(-1),
                               ignore_index=IGNORE_INDEX)
        return logits, loss

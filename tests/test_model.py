"""The transformer on its own: parameter counts, causality, the masked loss, the KV cache, every position encoding,
and its limits (learned positions, digit places), checked in one place."""

import pytest
import torch
import torch.nn.functional as F

from math_llm.data import ArithmeticDataset
from math_llm.errors import ConfigError
from math_llm.model import (MODEL_SIZES, DigitPlaces, KVCache, ModelConfig, Transformer, place_distance_bias,
                            random_place_offsets, rotary_angles, rotate)
from math_llm.tokenizer import DEFAULT_VOCAB, Tokenizer


def expected_parameter_count(num_layers, hidden_size, ffn_size, vocab_size, max_length, **_):
    attention = 3 * hidden_size * hidden_size + 3 * hidden_size + hidden_size * hidden_size + hidden_size
    mlp = hidden_size * ffn_size + ffn_size + ffn_size * hidden_size + hidden_size
    layer_norms = 2 * 2 * hidden_size
    embeddings = vocab_size * hidden_size + max_length * hidden_size  # the output head shares the token embedding
    return num_layers * (attention + mlp + layer_norms) + embeddings + 2 * hidden_size


@pytest.mark.parametrize("size", list(MODEL_SIZES))
def test_parameter_counts_match_the_table_shapes(size):
    config = ModelConfig(size, vocab_size=13, max_length=32)
    assert Transformer(config).num_parameters() == expected_parameter_count(vocab_size=13, max_length=32,
                                                                            **MODEL_SIZES[size])


def test_a_shape_field_overrides_the_named_size():
    config = ModelConfig("tiny", num_layers=3, ffn_size=96)
    assert (config.num_layers, config.hidden_size, config.num_heads, config.ffn_size) == (3, 64, 2, 96)
    assert len(Transformer(config).blocks) == 3


@pytest.mark.parametrize("settings, message", [
    (dict(num_heads=3), "--hidden-size 256 is not divisible by --num-heads 3"),
    (dict(num_layers=0), "--num-layers must be at least 1, got 0"),
    (dict(dropout=1.0), "--dropout must be in \\[0, 1\\), got 1.0"),
    (dict(place_bias=False), "--no-place-bias applies to --pos-encoding abacus only"),
    (dict(pos_encoding="alibi"), "--pos-encoding must be one of learned, rope, abacus"),
    (dict(model_size="huge"), "--model-size must be one of tiny, small, medium, large"),
])
def test_bad_model_settings_are_one_line_config_errors(settings, message):
    with pytest.raises(ConfigError, match=message):
        ModelConfig(**settings)


def test_future_tokens_never_change_past_logits():
    torch.manual_seed(0)
    model = Transformer(ModelConfig("tiny", vocab_size=13, max_length=16)).eval()
    tokens = torch.randint(0, 13, (2, 12))
    changed = tokens.clone()
    changed[:, 7:] = (changed[:, 7:] + 1) % 13
    with torch.no_grad():
        original, _ = model(tokens)
        perturbed, _ = model(changed)
    torch.testing.assert_close(original[:, :7], perturbed[:, :7])
    assert not torch.allclose(original[:, 7:], perturbed[:, 7:])


def test_sequence_longer_than_max_length_is_rejected():
    model = Transformer(ModelConfig("tiny", vocab_size=13, max_length=8))
    with pytest.raises(ValueError, match="a sequence of 9 tokens, more than the max_length of 8"):
        model(torch.zeros(1, 9, dtype=torch.long))


def test_loss_counts_only_answer_tokens():
    torch.manual_seed(0)
    tokenizer = Tokenizer()
    dataset = ArithmeticDataset(["12+34=46<end>", "5+5=10<end>"], tokenizer)
    model = Transformer(ModelConfig("tiny", vocab_size=len(tokenizer), max_length=32))
    inputs, targets, _ = dataset.batch(torch.tensor([0, 1]))
    logits, loss = model(inputs, targets)
    answer_positions = [(0, j) for j in range(5, 8)] + [(1, j) for j in range(3, 6)]
    expected = torch.stack([F.cross_entropy(logits[i, j], dataset.tokens[i, j + 1])
                            for i, j in answer_positions]).mean()
    torch.testing.assert_close(loss, expected)


def assert_cache_matches_full_pass(model, tokens, prompt_length, max_tokens=None):
    """Logits of the prompt in one cached call, then one token per call, equal those of one full forward pass."""
    cache = KVCache(model.config, batch_size=len(tokens), device=torch.device("cpu"), max_tokens=max_tokens)
    with torch.no_grad():
        full, _ = model(tokens)
        pieces = [model(tokens[:, :prompt_length], cache=cache)[0]] + [
            model(tokens[:, i:i + 1], cache=cache)[0] for i in range(prompt_length, tokens.shape[1])]
    torch.testing.assert_close(torch.cat(pieces, dim=1), full)
    return cache


def test_kv_cache_gives_the_logits_of_a_full_forward_pass():
    torch.manual_seed(0)
    model = Transformer(ModelConfig("tiny", vocab_size=13, max_length=16)).eval()
    cache = assert_cache_matches_full_pass(model, torch.randint(0, 13, (3, 10)), 6)
    assert cache.length == 10


def test_kv_cache_refuses_several_tokens_after_the_prompt():
    model = Transformer(ModelConfig("tiny", vocab_size=13, max_length=16)).eval()
    cache = KVCache(model.config, batch_size=1, device=torch.device("cpu"))
    model(torch.zeros(1, 4, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="one token per call"):
        model(torch.zeros(1, 2, dtype=torch.long), cache=cache)


# ---------------------------------------------------------------------------------------------------------------
# Position encodings

def digit_places_for(tokenizer):
    """The digit places of a model with this vocabulary, as train.py builds its config."""
    return DigitPlaces(ModelConfig(vocab_size=len(tokenizer), pos_encoding="abacus", **tokenizer.digit_place_ids()))


def places_of(text):
    tokenizer = Tokenizer(DEFAULT_VOCAB + ["-", "*"])
    return digit_places_for(tokenizer)(torch.tensor([tokenizer.encode(text)]))[0].tolist()


@pytest.mark.parametrize("text, expected", [
    # reversed-all 123 + 45 = 168: each number counts its digits from 1; "=" is place 1 of the answer's count, so
    # the token that predicts answer digit k has place k, as the operand digits of that column
    ("321+54=861<end>", [1, 2, 3, 0, 1, 2, 1, 2, 3, 4, 0]),
    ("9+9=81<end>", [1, 0, 1, 1, 2, 3, 0]),
    # numbers of different lengths, more operands, another operator
    ("1234567890123+7=", [*range(1, 14), 0, 1, 1]),
    ("12*345*6=", [1, 2, 0, 1, 2, 3, 0, 1, 1]),
    # a negative answer's sign shares the place of "=", so its digits keep their columns; "-" as operator is 0
    ("21-34=-31<end>", [1, 2, 0, 1, 2, 1, 1, 2, 3, 0]),
])
def test_digit_places_count_each_number_from_its_first_digit(text, expected):
    assert places_of(text) == expected


def test_digit_places_follow_the_ids_of_the_config_not_the_order_of_a_vocabulary():
    shuffled = Tokenizer(["<end>", "=", "-", "+", *"9876543210"])
    places = digit_places_for(shuffled)(torch.tensor([shuffled.encode("21-34=-31<end>")]))[0].tolist()
    assert places == [1, 2, 0, 1, 2, 1, 1, 2, 3, 0]


def test_digit_places_continue_across_decoding_steps():
    tokenizer = Tokenizer(DEFAULT_VOCAB + ["-"])
    ids = torch.tensor([tokenizer.encode("4321+99=3341<end>"), tokenizer.encode("1+2=3<end>" + "<end>" * 7),
                        tokenizer.encode("21-34=-31<end>" + "<end>" * 3)])
    digit_places = digit_places_for(tokenizer)
    whole = digit_places(ids)
    for prompt_length in (5, 6):  # the sign as the first decoded token, after a prompt that ends with "="
        pieces = [digit_places(ids[:, :prompt_length])]
        for step in range(prompt_length, ids.shape[1]):
            pieces.append(digit_places(ids[:, step:step + 1], pieces[-1][:, -1], ids[:, step - 1]))
        assert torch.equal(torch.cat(pieces, dim=1), whole)


def test_training_offsets_shift_every_digit_of_an_example_alike_and_stay_in_the_table():
    torch.manual_seed(0)
    places = digit_places_for(Tokenizer())(torch.tensor([Tokenizer().encode("4321+99=3341<end>")] * 500))
    shifted = random_place_offsets(places, table_size=20)
    offsets = shifted - places
    assert torch.equal(shifted == 0, places == 0)  # operators stay at 0
    assert (offsets[places > 0].view(500, -1) == offsets[:, :1]).all()  # one offset per example
    assert shifted.max() == 19 and set(offsets[:, 0].tolist()) == set(range(0, 20 - 5))  # every room used


def test_rotary_attention_depends_only_on_relative_positions():
    torch.manual_seed(0)
    q, k = torch.randn(1, 1, 1, 16), torch.randn(1, 1, 1, 16)

    def score(query_position, key_position):
        rotated_q = rotate(q, *rotary_angles(query_position, query_position + 1, 16, torch.device("cpu")))
        rotated_k = rotate(k, *rotary_angles(key_position, key_position + 1, 16, torch.device("cpu")))
        return (rotated_q * rotated_k).sum().item()

    assert score(7, 3) == pytest.approx(score(104, 100), abs=1e-4)
    assert score(7, 3) != pytest.approx(score(7, 5), abs=1e-2)
    assert torch.allclose(rotate(q, *rotary_angles(5, 6, 16, torch.device("cpu"))).norm(), q.norm())


@pytest.mark.parametrize("encoding", ["rope", "abacus"])
def test_length_free_encodings_cache_and_read_past_the_training_length(encoding):
    torch.manual_seed(0)
    model = Transformer(ModelConfig("tiny", vocab_size=13, max_length=8, pos_encoding=encoding,
                                    **Tokenizer().digit_place_ids())).eval()
    assert model.max_tokens is None
    assert_cache_matches_full_pass(model, torch.randint(0, 13, (3, 40)), 30, max_tokens=40)  # 5x max_length


def test_abacus_refuses_numbers_beyond_its_digit_places_in_evaluation():
    model = Transformer(ModelConfig("tiny", max_length=8, pos_encoding="abacus", digit_positions=10,
                                    **Tokenizer().digit_place_ids())).eval()
    model(torch.tensor([Tokenizer().encode("123456789+1=")]))  # place 9 is the last one
    with pytest.raises(ValueError, match="reaches digit place 10, beyond the model's 9"):
        model(torch.tensor([Tokenizer().encode("1234567890+1=")]))


def test_the_model_names_each_sequence_it_cannot_read_and_why():
    tokenizer = Tokenizer()
    texts = ["12+34=46<end>", "123456789+1=123456790<end>", "1+1=2<end>"]
    ids = [tokenizer.encode(text) for text in texts]
    tokens = torch.tensor([row + [tokenizer.end_id] * (24 - len(row)) for row in ids])
    lengths = torch.tensor([len(row) for row in ids])
    learned = Transformer(ModelConfig("tiny", max_length=16))
    assert list(learned.unreadable(tokens, lengths)) == [(1, "22 tokens, more than the max_length of 16 "
                                                             "(train.py --max-length)")]
    abacus = Transformer(ModelConfig("tiny", pos_encoding="abacus", digit_positions=10,
                                     **tokenizer.digit_place_ids()))
    assert list(abacus.unreadable(tokens, lengths)) == [
        (1, "a number that reaches digit place 10, beyond the model's 9 (train.py --digit-positions)")]
    assert list(Transformer(ModelConfig("tiny", pos_encoding="rope")).unreadable(tokens, lengths)) == []


@pytest.mark.parametrize("encoding, position_parameters", [("learned", 32 * 64), ("rope", 0), ("abacus", 0)])
def test_each_encoding_has_its_own_position_parameters(encoding, position_parameters):
    config = ModelConfig("tiny", vocab_size=13, max_length=32, pos_encoding=encoding, **Tokenizer().digit_place_ids())
    no_positions = expected_parameter_count(vocab_size=13, max_length=0, **MODEL_SIZES["tiny"])
    model = Transformer(config)
    assert model.num_parameters() == no_positions + position_parameters
    if encoding == "abacus":  # fixed codes: saved with the weights, never trained
        assert model.state_dict()["digit_place_codes"].shape == (128, 64)


def test_place_distance_bias_penalises_distant_digits_and_keeps_causality():
    places = torch.tensor([[1, 2, 0, 1, 2, 1, 2]])  # "12+34=4": digits, "+" (place 0), "=" (place 1)...
    bias = place_distance_bias(places, places, num_heads=2)
    assert bias.shape == (1, 2, 7, 7)
    assert bias[0, 0, 4, 3] == -1 and bias[0, 1, 4, 3] == -0.5  # places 2 and 1: distance 1, slopes 1 and 1/2
    assert bias[0, 0, 3, 0] == 0 and bias[0, 0, 4, 2] == 0  # same place; and "+" is no digit
    assert bias[0, 0, 6, 0] == -1 and bias[0, 0, 6, 1] == 0
    assert torch.isinf(bias[0, :, 2, 3:]).all() and not torch.isinf(bias[0, :, 2, :3]).any()  # no future keys
    last = place_distance_bias(places[:, -1:], places, num_heads=2)  # one new query over the cached keys
    torch.testing.assert_close(last, bias[:, :, -1:])


def test_without_the_place_bias_abacus_is_the_digit_codes_alone():
    torch.manual_seed(0)
    config = ModelConfig("tiny", max_length=16, pos_encoding="abacus", **Tokenizer().digit_place_ids())
    with_bias = Transformer(config).eval()
    without = Transformer(ModelConfig("tiny", max_length=16, pos_encoding="abacus", place_bias=False,
                                      **Tokenizer().digit_place_ids())).eval()
    without.load_state_dict(with_bias.state_dict())
    tokens = torch.tensor([Tokenizer().encode("4321+99=3341")])
    with torch.no_grad():
        assert not torch.allclose(with_bias(tokens)[0], without(tokens)[0])
        no_digits = torch.tensor([[10, 11, 10, 11]])  # "+=+=": nothing to penalise, so the same logits
        torch.testing.assert_close(with_bias(no_digits)[0], without(no_digits)[0])


# One layer, width 8, 2 heads, feed-forward 16, 14 tokens, 32 learned positions; the counts by hand:
# embeddings 14x8 + 32x8 = 368; norms 3 x (8 + 8); qkv 8x24 + 24; proj 8x8 + 8; mlp 8x16 + 16 + 16x8 + 8
SMALL_SHAPE = dict(model_size="tiny", num_layers=1, hidden_size=8, num_heads=2, ffn_size=16, vocab_size=14,
                   max_length=32)
# the same, then: no biases, RMSNorm (gains only: 3 x 8), heads 2 wide (attention width 4), every block matrix of rank
# 2 (qkv 8x2 + 2x12, proj 4x2 + 2x8), SwiGLU (gate and up 8x2 + 2x16 each, down 16x2 + 2x8), a head of its own 14x8
EVERY_OPTION = dict(bias=False, norm="rmsnorm", head_dim=2, rank=2, mlp="swiglu", tie_embeddings=False)


@pytest.mark.parametrize("options, count", [
    ({}, 368 + 48 + 216 + 72 + 144 + 136),
    (EVERY_OPTION, 368 + 24 + 40 + 24 + 3 * 48 + 112),
    (dict(tie_embeddings=False), 984 + 112),
    (dict(rank=2), 984 - 216 - 72 - 144 - 136 + (16 + 48 + 24) + (16 + 16 + 8) + (16 + 32 + 16) + (32 + 16 + 8)),
])
def test_every_shape_option_gives_the_parameter_count_worked_out_by_hand(options, count):
    assert Transformer(ModelConfig(**SMALL_SHAPE, **options)).num_parameters() == count


@pytest.mark.parametrize("options", [EVERY_OPTION, dict(head_dim=6, pos_encoding="rope"), dict(mlp="swiglu")])
def test_every_shape_option_trains_and_caches_like_a_full_forward_pass(options):
    torch.manual_seed(0)
    model = Transformer(ModelConfig(**SMALL_SHAPE, **options))
    tokens = torch.randint(0, 14, (3, 10))
    _, loss = model(tokens, tokens)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    assert_cache_matches_full_pass(model.eval(), tokens, 6)


def test_a_low_rank_layer_starts_with_the_spread_of_the_full_layer_it_replaces():
    torch.manual_seed(0)
    wide = dict(model_size="tiny", num_layers=2, hidden_size=256, num_heads=4, ffn_size=512, max_length=8)
    full, low = Transformer(ModelConfig(**wide)), Transformer(ModelConfig(**wide, rank=16))
    for name in ("attention.qkv", "attention.proj", "mlp.0", "mlp.2"):  # proj and mlp.2: GPT-2's scaled init
        full_weight = full.get_submodule(f"blocks.0.{name}").weight
        first, second = low.get_submodule(f"blocks.0.{name}")
        product = (second.weight @ first.weight).detach()
        assert product.shape == full_weight.shape
        assert abs(product.std() / full_weight.std() - 1) < 0.1, name


def test_the_default_options_are_the_gpt2_block():
    model = Transformer(ModelConfig(**SMALL_SHAPE))
    names = set(model.state_dict())
    assert {"blocks.0.mlp.0.bias", "blocks.0.attention.qkv.weight", "blocks.0.ln_mlp.bias"} <= names
    assert model.lm_head.weight is model.token_embedding.weight
    bare = Transformer(ModelConfig(**SMALL_SHAPE, **EVERY_OPTION))
    assert not [name for name in bare.state_dict() if name.endswith(".bias")]
    assert isinstance(bare.blocks[0].ln_mlp, torch.nn.RMSNorm) and bare.lm_head.weight is not bare.token_embedding.weight


@pytest.mark.parametrize("settings, message", [
    (dict(rank=0), "--head-dim and --rank must be at least 1"),
    (dict(num_heads=3, hidden_size=8), "--hidden-size 8 is not divisible by --num-heads 3 \\(or give --head-dim\\)"),
    (dict(head_dim=3, pos_encoding="rope"), "--pos-encoding rope needs an even head width, got 3"),
    (dict(norm="batchnorm"), "--norm must be one of layernorm, rmsnorm"),
])
def test_bad_shape_options_are_one_line_config_errors(settings, message):
    with pytest.raises(ConfigError, match=message):
        ModelConfig(**{**SMALL_SHAPE, **settings})

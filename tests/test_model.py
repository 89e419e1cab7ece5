import pytest
import torch
import torch.nn.functional as F

from src.data import ArithmeticDataset
from src.model import MODEL_SIZES, KVCache, Transformer, build_model_config
from src.tokenizer import Tokenizer


def expected_parameter_count(num_layers, hidden_size, ffn_size, vocab_size, max_length, **_):
    attention = 3 * hidden_size * hidden_size + 3 * hidden_size + hidden_size * hidden_size + hidden_size
    mlp = hidden_size * ffn_size + ffn_size + ffn_size * hidden_size + hidden_size
    layer_norms = 2 * 2 * hidden_size
    embeddings = vocab_size * hidden_size + max_length * hidden_size  # the output head shares the token embedding
    return num_layers * (attention + mlp + layer_norms) + embeddings + 2 * hidden_size


@pytest.mark.parametrize("size", list(MODEL_SIZES))
def test_parameter_counts_match_the_table_shapes(size):
    config = build_model_config(size, vocab_size=13, max_length=32)
    assert Transformer(config).num_parameters() == expected_parameter_count(vocab_size=13, max_length=32,
                                                                            **MODEL_SIZES[size])


def test_future_tokens_never_change_past_logits():
    torch.manual_seed(0)
    model = Transformer(build_model_config("tiny", vocab_size=13, max_length=16)).eval()
    tokens = torch.randint(0, 13, (2, 12))
    changed = tokens.clone()
    changed[:, 7:] = (changed[:, 7:] + 1) % 13
    with torch.no_grad():
        original, _ = model(tokens)
        perturbed, _ = model(changed)
    torch.testing.assert_close(original[:, :7], perturbed[:, :7])
    assert not torch.allclose(original[:, 7:], perturbed[:, 7:])


def test_sequence_longer_than_max_length_is_rejected():
    model = Transformer(build_model_config("tiny", vocab_size=13, max_length=8))
    with pytest.raises(ValueError, match="exceeds the model's max_length 8"):
        model(torch.zeros(1, 9, dtype=torch.long))


def test_loss_counts_only_answer_tokens():
    torch.manual_seed(0)
    tokenizer = Tokenizer()
    dataset = ArithmeticDataset(["12+34=46<end>", "5+5=10<end>"], tokenizer, max_length=32)
    model = Transformer(build_model_config("tiny", vocab_size=len(tokenizer), max_length=32))
    inputs, targets = dataset.batch(torch.tensor([0, 1]))
    logits, loss = model(inputs, targets)
    answer_positions = [(0, j) for j in range(5, 8)] + [(1, j) for j in range(3, 6)]
    expected = torch.stack([F.cross_entropy(logits[i, j], dataset.tokens[i, j + 1])
                            for i, j in answer_positions]).mean()
    torch.testing.assert_close(loss, expected)


def test_kv_cache_gives_the_logits_of_a_full_forward_pass():
    torch.manual_seed(0)
    model = Transformer(build_model_config("tiny", vocab_size=13, max_length=16)).eval()
    tokens = torch.randint(0, 13, (3, 10))
    cache = KVCache(model.config, batch_size=3, device=torch.device("cpu"))
    with torch.no_grad():
        full, _ = model(tokens)
        pieces = [model(tokens[:, :6], cache=cache)[0]] + [model(tokens[:, i:i + 1], cache=cache)[0]
                                                          for i in range(6, 10)]
    torch.testing.assert_close(torch.cat(pieces, dim=1), full)
    assert cache.length == 10


def test_kv_cache_refuses_several_tokens_after_the_prompt():
    model = Transformer(build_model_config("tiny", vocab_size=13, max_length=16)).eval()
    cache = KVCache(model.config, batch_size=1, device=torch.device("cpu"))
    model(torch.zeros(1, 4, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="one token per call"):
        model(torch.zeros(1, 2, dtype=torch.long), cache=cache)

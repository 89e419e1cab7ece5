"""Greedy decoding: the KV-cached batched decoder must give exactly the naive decoder's answers."""

import pytest
import torch

from math_llm import model as model_module
from math_llm.benchmarking import generation_speed
from math_llm.data import ArithmeticDataset
from math_llm.data_generation import DataConfig, generate_splits
from math_llm.decoding import dataset_answers, greedy_generate, naive_answers
from math_llm.metrics import teacher_forced_counts
from math_llm.model import ModelConfig, Transformer
from math_llm.runtime import select_precision
from math_llm.tokenizer import Tokenizer

CPU = torch.device("cpu")


def test_cached_and_full_recompute_decoding_agree_token_for_token():
    torch.manual_seed(0)
    model = Transformer(ModelConfig("small", vocab_size=13, max_length=24)).eval()
    prompts = torch.randint(0, 11, (64, 6))
    cached = greedy_generate(model, prompts, 18, end_id=12)
    recomputed = greedy_generate(model, prompts, 18, end_id=12, use_cache=False)
    assert cached == recomputed
    assert max(map(len, cached)) > 1  # an untrained model rarely ends early, so many tokens were compared


def test_batched_evaluation_answers_equal_one_at_a_time_answers():
    torch.manual_seed(0)
    tokenizer = Tokenizer()
    examples = generate_splits(DataConfig(num_examples=120, seed=3))["train"]
    dataset = ArithmeticDataset(examples, tokenizer)  # prompts of 3 lengths: batches by length
    model = Transformer(ModelConfig("tiny", vocab_size=len(tokenizer), max_length=32)).eval()
    batched = dataset_answers(model, dataset, tokenizer, batch_size=64, device=CPU, precision=select_precision(CPU))
    assert batched == naive_answers(model, dataset, tokenizer, CPU)
    assert len(set(dataset.prompt_lengths.tolist())) == 3


def test_decoding_stops_once_every_sequence_has_ended():
    class EndsAtOnce(torch.nn.Module):
        config = ModelConfig("tiny", vocab_size=13, max_length=32)

        def __init__(self):
            super().__init__()
            self.calls = 0

        def forward(self, idx, targets=None, cache=None):
            self.calls += 1
            logits = torch.zeros(*idx.shape, 13)
            logits[..., 12] = 1.0
            return logits, None

    model = EndsAtOnce()
    assert greedy_generate(model, torch.zeros(4, 5, dtype=torch.long), 20, end_id=12) == [[]] * 4
    assert model.calls == 1


def test_generation_benchmark_reports_identical_answers():
    torch.manual_seed(0)
    tokenizer = Tokenizer()
    dataset = ArithmeticDataset(generate_splits(DataConfig(num_examples=60, seed=1))["train"], tokenizer)
    model = Transformer(ModelConfig("tiny", vocab_size=len(tokenizer), max_length=32))
    result = generation_speed(model, dataset, tokenizer, CPU, batch_size=16)
    assert result["identical"] and result["num_problems"] == len(dataset)


def test_long_problems_are_evaluated_in_smaller_batches_with_the_same_results(monkeypatch):
    torch.manual_seed(0)
    tokenizer = Tokenizer()
    data_config = DataConfig(num_examples=20, min_digits=30, max_digits=40, sampling="same-length",
                             format="reversed-all", test_only=True, seed=3)
    dataset = ArithmeticDataset(generate_splits(data_config)["test"], tokenizer, metadata={"format": "reversed-all"})
    config = ModelConfig("tiny", vocab_size=len(tokenizer), pos_encoding="abacus", digit_positions=48,
                         **tokenizer.digit_place_ids())
    model = Transformer(config).eval()
    batches = []
    model.register_forward_pre_hook(lambda module, args: batches.append(args[0].shape[0]))
    fp32 = select_precision(CPU)
    whole = teacher_forced_counts(model, dataset, 64, CPU, fp32), dataset_answers(model, dataset, tokenizer, 64, CPU,
                                                                                 fp32)
    assert max(batches) > 3
    longest = int(dataset.lengths.max())
    monkeypatch.setattr(model_module, "ATTENTION_SCORES_LIMIT", config.num_heads * longest ** 2 * 3)
    batches.clear()
    capped = teacher_forced_counts(model, dataset, 64, CPU, fp32), dataset_answers(model, dataset, tokenizer, 64, CPU,
                                                                                  fp32)
    assert max(batches) == 3  # at most 3 problems of the longest length per batch, prefill and decoding alike
    assert capped[1] == whole[1]
    assert capped[0][1:] == whole[0][1:]  # correct and answer tokens
    assert capped[0][0] == pytest.approx(whole[0][0], rel=1e-5)  # the loss, summed in another order

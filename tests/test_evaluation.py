"""Metrics on a known case: a model that answers from a fixed table, some answers deliberately wrong."""

import pytest
import torch

from src.data import ArithmeticDataset
from src.evaluation import evaluate
from src.model import ModelConfig
from src.runtime import select_precision
from src.tokenizer import Tokenizer


class TableModel(torch.nn.Module):
    """Predicts, at every position, the next character of the answer its table holds for the prompt."""

    def __init__(self, tokenizer, answers):
        super().__init__()
        self.tokenizer, self.answers = tokenizer, answers
        self.config = ModelConfig(vocab_size=len(tokenizer), max_length=32)

    def forward(self, idx, targets=None, cache=None):
        if cache is None:
            return self.table_logits(idx), None
        # Greedy decoding feeds only the new tokens: this model keeps the earlier ones itself, in the cache object.
        new_length = idx.shape[1]
        idx = torch.cat([cache.seen_ids, idx], dim=1) if cache.length else idx
        cache.seen_ids, cache.length = idx, idx.shape[1]
        return self.table_logits(idx)[:, -new_length:], None

    def table_logits(self, idx):
        logits = torch.zeros(*idx.shape, len(self.tokenizer))
        for row, ids in enumerate(idx.tolist()):
            text = self.tokenizer.decode(ids)
            for position in range(len(ids)):
                prefix = self.tokenizer.decode(ids[: position + 1])
                prompt, equals, written = prefix.partition("=")
                if not equals:
                    continue
                full = self.tokenizer.encode(self.answers[prompt + "="] + "<end>")
                done = len(self.tokenizer.encode(written)) if written else 0
                logits[row, position, full[min(done, len(full) - 1)]] = 1.0
        return logits


def test_metrics_on_a_known_case():
    tokenizer = Tokenizer()
    examples = ["1+2=3<end>", "4+5=9<end>", "12+34=46<end>", "50+50=100<end>", "7+13=20<end>"]
    # two wrong answers: one digit off ("47"), and one too short ("10" for "100")
    answers = {"1+2=": "3", "4+5=": "9", "12+34=": "47", "50+50=": "10", "7+13=": "20"}
    dataset = ArithmeticDataset(examples, tokenizer, max_length=32)
    results = evaluate(TableModel(tokenizer, answers), dataset, tokenizer, batch_size=2,
                       device=torch.device("cpu"), precision=select_precision(torch.device("cpu")))
    assert results["exact_match"] == pytest.approx(3 / 5)
    # answer tokens (with <end>): 2 + 2 + 3 + 4 + 3 = 14; wrong: "7" of 47, and "<end>" where "0" was due
    assert results["token_accuracy"] == pytest.approx(12 / 14)
    assert results["exact_match_by_operand_digits"] == {
        "1x1": {"exact_match": 1.0, "count": 2},
        "1x2": {"exact_match": 1.0, "count": 1},
        "2x2": {"exact_match": 0.0, "count": 2},
    }
    assert results["mistakes"] == [{"prompt": "12+34=", "expected": "46", "predicted": "47"},
                                   {"prompt": "50+50=", "expected": "100", "predicted": "10"}]

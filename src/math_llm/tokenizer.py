"""Character-level tokenizer for arithmetic strings such as "12+34=46<end>".

The vocabulary follows from the data (`vocab_for`) and is saved with every checkpoint, so a model always decodes
with its own: the seed's addition data gives exactly the seed's 13 tokens, in the seed's order.
"""

import re

from math_llm.errors import UserError
from math_llm.operations import ANSWER_SEPARATOR

DEFAULT_VOCAB = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "+", "=", "<end>"]
END_TOKEN = "<end>"
THINK_START, THINK_END = "<think>", "</think>"  # around the scratchpad's steps
# What other data may use, in the order added (a vocabulary keeps this order, so the ids of older ones never change):
# signs and operators, the scratchpad's separator and its markers, division and its remainder's separator
EXTRA_TOKENS = ["-", "*", " ", THINK_START, THINK_END, "/", ANSWER_SEPARATOR]
DIGITS = "0123456789"


def vocab_for(texts):
    """DEFAULT_VOCAB, then the EXTRA_TOKENS that `texts` use. Characters outside both stay unknown, so data with
    a stray character fails to encode with a clear error instead of growing the vocabulary."""
    joined = "".join(texts)
    characters = joined  # the text outside the tokens of several characters ("/" is inside "</think>")
    for token in sorted((t for t in DEFAULT_VOCAB + EXTRA_TOKENS if len(t) > 1), key=len, reverse=True):
        characters = characters.replace(token, "")
    return DEFAULT_VOCAB + [token for token in EXTRA_TOKENS if token in (joined if len(token) > 1 else characters)]


class TokenizerError(UserError, ValueError):
    """A string that cannot be tokenized; the message names the character and its position."""


class Tokenizer:
    def __init__(self, vocab=None):
        self.vocab = list(vocab if vocab is not None else DEFAULT_VOCAB)
        if len(set(self.vocab)) != len(self.vocab):
            raise ValueError(f"vocabulary has duplicate tokens: {self.vocab}")
        if END_TOKEN not in self.vocab:
            raise ValueError(f"vocabulary must contain {END_TOKEN}: {self.vocab}")
        self.token_to_id = {token: index for index, token in enumerate(self.vocab)}
        # Longest tokens first, so "<end>" wins over any single character it starts with.
        self._token_pattern = re.compile("|".join(re.escape(t) for t in sorted(self.vocab, key=len, reverse=True)))
        self.end_id = self.token_to_id[END_TOKEN]

    def __len__(self):
        return len(self.vocab)

    def encode(self, text):
        tokens = self._token_pattern.findall(text)  # skips what matches no token: caught by the length check
        if sum(map(len, tokens)) != len(text):
            position = 0
            while match := self._token_pattern.match(text, position):
                position = match.end()
            raise TokenizerError(f"unknown character {text[position]!r} at position {position} in {text!r} "
                                 f"(vocabulary: {' '.join(self.vocab)})")
        return [self.token_to_id[token] for token in tokens]

    def decode(self, ids):
        return "".join(self.vocab[int(i)] for i in ids)

    def digit_place_ids(self):
        """What the abacus position encoding counts (ModelConfig's digit_ids, answer_start_id, sign_id): the
        digits, the "=" that starts the answer's count, and the "-" that may sign an answer (-1 if none)."""
        return dict(digit_ids=tuple(self.token_to_id[digit] for digit in DIGITS),
                    answer_start_id=self.token_to_id["="], sign_id=self.token_to_id.get("-", -1))

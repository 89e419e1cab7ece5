import pytest

from math_llm.tokenizer import DEFAULT_VOCAB, Tokenizer, TokenizerError, vocab_for


def test_vocabulary_is_digits_plus_equals_end():
    assert DEFAULT_VOCAB == [str(d) for d in range(10)] + ["+", "=", "<end>"]


def test_encode_decode_round_trip():
    tokenizer = Tokenizer()
    text = "90+17=107<end>"
    ids = tokenizer.encode(text)
    assert len(ids) == 10  # "<end>" is one token
    assert ids[-1] == tokenizer.end_id
    assert tokenizer.decode(ids) == text


def test_unknown_character_names_character_and_position():
    with pytest.raises(TokenizerError, match=r"unknown character '\*' at position 2"):
        Tokenizer().encode("12*3=36<end>")


def test_partial_end_token_is_unknown():
    with pytest.raises(TokenizerError, match="'<' at position 3"):
        Tokenizer().encode("1=1<en")


def test_vocabulary_must_hold_end_token():
    with pytest.raises(ValueError, match="<end>"):
        Tokenizer(["0", "1"])


def test_the_vocabulary_takes_a_character_only_where_it_stands_alone():
    # "/" and "r" are division's, and "/" is also inside "</think>": a scratchpad does not make it a token
    assert vocab_for(["1+1=<think>1+1=2</think>2<end>"]) == DEFAULT_VOCAB + [" ", "<think>", "</think>"][1:]
    assert vocab_for(["17/5=3r2<end>"]) == DEFAULT_VOCAB + ["/", "r"]
    assert Tokenizer(vocab_for(["17/5=3r2<end>"])).encode("17/5=3r2<end>")[-3:] == [14, 2, 12]


def test_the_tokens_of_digit_places_come_from_the_vocabulary():
    assert Tokenizer().digit_place_ids() == dict(digit_ids=tuple(range(10)), answer_start_id=11, sign_id=-1)
    assert Tokenizer(DEFAULT_VOCAB + ["-"]).digit_place_ids()["sign_id"] == 13

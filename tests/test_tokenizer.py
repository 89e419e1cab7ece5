import pytest

from src.tokenizer import DEFAULT_VOCAB, Tokenizer, TokenizerError


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

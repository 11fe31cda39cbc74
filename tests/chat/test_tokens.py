"""chat.tokens: resume tokens, pure."""

from chat.tokens import MAX_TOKEN_LENGTH, ResumeToken


def test_a_new_token_parses_back_and_matches_only_its_own_hash():
    token, other = ResumeToken.new(), ResumeToken.new()
    parsed = ResumeToken.parse(token.secret)
    assert parsed == token and parsed.matches(token.verifier_hash)
    assert not parsed.matches(other.verifier_hash) and not parsed.matches(None)
    assert token.verifier not in token.verifier_hash and len(token.verifier) * 6 >= 128


def test_the_verifier_stays_out_of_repr():
    token = ResumeToken.new()
    assert token.verifier not in repr(token) and token.selector in repr(token)


def test_text_that_cannot_be_a_token():
    for text in (None, 12, "", "no-separator", ".verifier", "selector.", "a." + "b" * MAX_TOKEN_LENGTH):
        assert ResumeToken.parse(text) is None, text

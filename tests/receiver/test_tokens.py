import json

import pytest

from receiver import tokens
from tests.receiver.conftest import read_text


def test_token_is_stored_hashed_and_spent_once(store):
    tok = tokens.new_token(store, ttl=60)
    with open(store.path(tokens.TOKEN_FILE)) as f:
        raw = f.read()
    assert tok not in raw
    assert len(json.loads(raw)["tokens"]) == 1
    tokens.redeem(store, tok)
    with pytest.raises(tokens.TokenUsed) as e:
        tokens.redeem(store, tok)
    assert e.value.code == "auth.token_used" and e.value.http_status == 401


def test_expired_token_is_refused(store):
    tok = tokens.new_token(store, ttl=10, now=1000.0)
    with pytest.raises(tokens.TokenExpired) as e:
        tokens.redeem(store, tok, now=1011.0)
    assert e.value.code == "auth.token_expired"
    # still valid just before expiry, on a fresh token
    tok2 = tokens.new_token(store, ttl=10, now=1000.0)
    tokens.redeem(store, tok2, now=1009.0)


@pytest.mark.parametrize("wrong", ["nope", "", None, 42, "x" * 10000])
def test_wrong_token_is_invalid(store, wrong):
    tokens.new_token(store)
    with pytest.raises(tokens.TokenInvalid) as e:
        tokens.redeem(store, wrong)
    assert e.value.code == "auth.token_invalid"


def test_older_token_still_works_after_token_new(store):
    first = tokens.new_token(store)
    second = tokens.new_token(store)
    tokens.redeem(store, second)
    tokens.redeem(store, first)


def test_repeated_failures_are_slowed_down_and_a_good_token_resets(store):
    tok = tokens.new_token(store, now=0.0)
    t = 100.0
    for _ in range(tokens.FREE_FAILURES):
        with pytest.raises(tokens.TokenInvalid):
            tokens.redeem(store, "wrong", now=t)
    # the 6th wrong try is still checked (delay counts from the 5th failure: 1 s)
    with pytest.raises(tokens.Throttled) as e:
        tokens.redeem(store, tok, now=t + 0.5)  # even the right token waits
    assert e.value.code == "auth.throttled" and e.value.http_status == 429
    assert e.value.retry_after >= 1
    with pytest.raises(tokens.TokenInvalid):
        tokens.redeem(store, "wrong", now=t + 1.5)
    # now 6 failures: 2 s wait
    with pytest.raises(tokens.Throttled):
        tokens.redeem(store, "wrong", now=t + 3.0)
    tokens.redeem(store, tok, now=t + 4.0)
    data = json.loads(read_text(store.path(tokens.TOKEN_FILE)))
    assert data["failures"]["-"]["count"] == 0


def test_throttle_counts_per_peer_address(store):
    tok = tokens.new_token(store, now=0.0)
    t = 100.0
    for _ in range(tokens.FREE_FAILURES):
        with pytest.raises(tokens.TokenInvalid):
            tokens.redeem(store, "wrong", now=t, peer="203.0.113.9")
    with pytest.raises(tokens.Throttled):
        tokens.redeem(store, "wrong", now=t + 0.5, peer="203.0.113.9")
    # the real source, elsewhere, is not kept out by someone else's guesses
    tokens.redeem(store, tok, now=t + 0.5, peer="198.51.100.7")
    with pytest.raises(tokens.Throttled):
        tokens.redeem(store, "wrong", now=t + 0.6, peer="203.0.113.9")


def test_peer_failures_are_bounded_and_forgotten(store):
    tokens.new_token(store, now=0.0)
    for n in range(tokens.MAX_PEERS + 20):
        with pytest.raises(tokens.TokenInvalid):
            tokens.redeem(store, "wrong", now=100.0 + n, peer="10.0.%d.%d" % (n // 256, n % 256))
    table = json.loads(read_text(store.path(tokens.TOKEN_FILE)))["failures"]
    assert len(table) == tokens.MAX_PEERS and "10.0.0.0" not in table
    with pytest.raises(tokens.TokenInvalid):
        tokens.redeem(store, "wrong", now=100.0 + tokens.PEER_MEMORY + 1000, peer="10.9.9.9")
    table = json.loads(read_text(store.path(tokens.TOKEN_FILE)))["failures"]
    assert list(table) == ["10.9.9.9"]


def test_old_global_failure_count_is_read_as_no_failures(store):
    tok = tokens.new_token(store, now=0.0)
    data = json.loads(read_text(store.path(tokens.TOKEN_FILE)))
    data["failures"] = {"count": 50, "last": 99.0}
    store.write(tokens.TOKEN_FILE, data)
    tokens.redeem(store, tok, now=100.0, peer="198.51.100.7")


def test_delay_grows_and_is_capped():
    assert [tokens.delay_for(n) for n in range(0, 8)] == [0, 0, 0, 0, 0, 1, 2, 4]
    assert tokens.delay_for(100) == tokens.MAX_DELAY

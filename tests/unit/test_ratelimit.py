"""relay.filter.ratelimit.TokenBucket with an injected clock (SPEC §3: 60 a minute per
sender, bursts of 10): no wall clock, every step is exact."""

from relay.filter.ratelimit import TokenBucket


class Clock:
    """A clock the test moves by hand (seconds)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def allowed_in_a_row(bucket: TokenBucket, key: str, limit: int = 1000) -> int:
    """How many messages ``key`` may send now, one after the other."""
    n = 0
    while n < limit and bucket.allow(key):
        n += 1
    return n


def test_a_new_sender_has_a_full_burst():
    bucket = TokenBucket(60, 10, clock=Clock())
    assert allowed_in_a_row(bucket, "a@x") == 10


def test_the_bucket_refills_at_the_rate():
    clock = Clock()
    bucket = TokenBucket(60, 10, clock=clock)  # one token a second
    allowed_in_a_row(bucket, "a@x")
    clock.now += 0.5
    assert not bucket.allow("a@x")  # half a token
    clock.now += 0.5
    assert bucket.allow("a@x")      # the refused attempt took nothing
    assert not bucket.allow("a@x")
    clock.now += 3
    assert allowed_in_a_row(bucket, "a@x") == 3


def test_a_refill_never_exceeds_the_burst():
    clock = Clock()
    bucket = TokenBucket(60, 10, clock=clock)
    allowed_in_a_row(bucket, "a@x")
    clock.now += 3600
    assert allowed_in_a_row(bucket, "a@x") == 10


def test_a_steady_sender_at_the_rate_is_never_refused():
    clock = Clock()
    bucket = TokenBucket(60, 10, clock=clock)
    allowed_in_a_row(bucket, "a@x")
    for _ in range(120):  # two minutes at exactly 60 a minute
        clock.now += 1
        assert bucket.allow("a@x")


def test_per_minute_is_a_rate_per_minute():
    clock = Clock()
    bucket = TokenBucket(6, 1, clock=clock)  # one token every 10 s
    assert bucket.allow("a@x")
    clock.now += 9.9
    assert not bucket.allow("a@x")
    clock.now += 0.1
    assert bucket.allow("a@x")


def test_senders_are_counted_apart():
    bucket = TokenBucket(60, 10, clock=Clock())
    assert allowed_in_a_row(bucket, "a@x") == 10
    assert allowed_in_a_row(bucket, "b@x") == 10
    assert not bucket.allow("a@x")


def test_refilled_senders_are_forgotten_past_10000():
    clock = Clock()
    bucket = TokenBucket(60, 10, clock=clock)
    for i in range(10000):
        bucket.allow(f"old{i}@x")
    allowed_in_a_row(bucket, "busy@x")
    assert len(bucket.buckets) == 10001
    clock.now += 1  # the old ones are full again (9 + 1), busy@x has one token
    assert bucket.allow("new@x")
    assert set(bucket.buckets) == {"busy@x", "new@x"}
    assert allowed_in_a_row(bucket, "busy@x") == 1  # forgetting did not refill the busy one

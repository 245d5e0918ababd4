"""The listener's turn buffer: same samples as concatenation, whatever the append/drop pattern."""

import numpy as np

from realtime.listener import SampleBuffer


def test_matches_concatenation_under_random_appends_and_drops() -> None:
    """Growth, compaction and front drops never reorder, lose or duplicate a sample."""
    rng = np.random.default_rng(7)
    buffer = SampleBuffer(capacity=100)
    reference = np.zeros(0, dtype=np.float32)
    for _ in range(2_000):
        chunk = rng.standard_normal(int(rng.integers(0, 400))).astype(np.float32)
        buffer.append(chunk)
        reference = np.concatenate([reference, chunk])
        if rng.random() < 0.3:
            n = int(rng.integers(0, len(reference) + 50))
            buffer.drop(n)
            reference = reference[n:]
        assert len(buffer) == len(reference)
        np.testing.assert_array_equal(buffer.view(), reference)
    buffer.clear()
    assert len(buffer) == 0 and buffer.view().size == 0


def test_memory_stays_bounded_by_what_is_held() -> None:
    """A stream that keeps only its tail does not grow the buffer without end."""
    buffer = SampleBuffer(capacity=1_000)
    for _ in range(10_000):
        buffer.append(np.ones(320, dtype=np.float32))
        if len(buffer) > 4_000:
            buffer.drop(len(buffer) - 4_000)
    assert buffer._buf.size <= 16_000


def test_an_unused_buffer_holds_no_memory() -> None:
    """Idle sessions never send audio: their buffer allocates nothing until the first append."""
    buffer = SampleBuffer()
    assert buffer._buf.nbytes == 0
    buffer.append(np.ones(320, dtype=np.float32))
    assert len(buffer) == 320 and buffer._buf.size == 16_000

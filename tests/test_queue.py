"""Block queues: FIFO, bounds, persistence across restarts, corruption, a disk that refuses writes."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from relay.remote.queue import Block, DiskQueue, MemoryQueue


def blocks(n: int, size: int = 100) -> list[Block]:
    return [Block(bytes([i % 256]) * size, samples=i + 1) for i in range(n)]


def drain(q: DiskQueue | MemoryQueue) -> list[Block]:
    out = []
    while (b := q.peek()) is not None:
        out.append(b)
        q.ack()
    return out


def test_memory_queue_fifo_and_bound() -> None:
    q = MemoryQueue(max_bytes=350)
    for b in blocks(5):
        q.put(b)
    assert len(q) == 3 and q.dropped_samples == 1 + 2 and q.samples == 3 + 4 + 5
    assert [b.samples for b in drain(q)] == [3, 4, 5]


def test_disk_queue_survives_restart(tmp_path: Path) -> None:
    q = DiskQueue(tmp_path, segment_bytes=250, memory_bytes=150)
    for b in blocks(10):
        q.put(b)
    for _ in range(3):
        assert q.peek() is not None
        q.ack()
    q.close()
    q2 = DiskQueue(tmp_path, segment_bytes=250)
    assert len(q2) == 7 and q2.samples == sum(range(4, 11))
    got = drain(q2)
    assert [b.samples for b in got] == list(range(4, 11))
    assert [b.data for b in got] == [b.data for b in blocks(10)[3:]]
    q2.close()
    q3 = DiskQueue(tmp_path)
    assert len(q3) == 0 and q3.peek() is None
    q3.close()
    assert list(tmp_path.glob("*.seg")) == [] or all(p.stat().st_size == 0 for p in tmp_path.glob("*.seg"))


def test_disk_queue_bound_drops_oldest_segments(tmp_path: Path) -> None:
    q = DiskQueue(tmp_path, max_bytes=1000, segment_bytes=200)
    for b in blocks(30):
        q.put(b)
    assert q._disk_bytes <= 1000 + 200 and q.bytes <= q._disk_bytes and q.dropped_samples > 0
    got = drain(q)
    assert sum(b.samples for b in got) + q.dropped_samples == sum(range(1, 31))
    assert [b.samples for b in got] == sorted(b.samples for b in got) and got[-1].samples == 30
    q.close()


def test_corrupt_record_is_skipped_and_counted(tmp_path: Path) -> None:
    q = DiskQueue(tmp_path, memory_bytes=0)
    for b in blocks(3):
        q.put(b)
    q.close()
    (seg,) = tmp_path.glob("*.seg")
    raw = bytearray(seg.read_bytes())
    raw[16 + 116 + 20] ^= 0xFF  # a byte of the second record's data
    seg.write_bytes(bytes(raw))
    q = DiskQueue(tmp_path)
    got = drain(q)
    assert [b.samples for b in got] == [1, 3] and q.corrupt_records == 1 and q.corrupt_samples == 2 and q.dropped_samples == 0
    q.close()


def test_torn_tail_and_garbage_segment(tmp_path: Path) -> None:
    q = DiskQueue(tmp_path)
    for b in blocks(2):
        q.put(b)
    q.close()
    (seg,) = tmp_path.glob("*.seg")
    with open(seg, "ab") as f:
        f.write(b"RLQ1\x00\x10")  # a torn header from a kill mid-write
    (tmp_path / "0000000000000099.seg").write_bytes(b"garbage" * 10)
    q = DiskQueue(tmp_path)
    assert [b.samples for b in drain(q)] == [1, 2]
    assert q.corrupt_records == 2
    q.close()


def test_disk_full_keeps_blocks_in_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    q = DiskQueue(tmp_path)
    q.put(blocks(1)[0])
    real_write = os.write

    def full(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    for b in blocks(3)[1:]:
        q.put(b)
    assert q.write_errors == 1 and len(q) == 3
    monkeypatch.setattr(os, "write", real_write)
    assert [b.samples for b in drain(q)] == [1, 2, 3]
    q.close()


def test_a_short_write_is_taken_back_and_held_blocks_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A disk that takes only part of a record (full): the torn piece is truncated away, the block
    kept in memory; held blocks stay under memory_bytes, the oldest dropped and counted."""
    data = blocks(6)
    size = len(data[0].data)
    q = DiskQueue(tmp_path, memory_bytes=3 * size)
    q.put(data[0])
    real_write = os.write

    def partial(fd: int, record: bytes) -> int:
        return real_write(fd, record[: len(record) // 2])

    monkeypatch.setattr(os, "write", partial)
    q.put(data[1])
    (seg,) = tmp_path.glob("*.seg")
    assert seg.stat().st_size == len(data[0].data) + 16  # only the first record (16-byte header) is on disk
    monkeypatch.setattr(os, "write", real_write)
    for b in data[2:]:  # the disk failed: these are held in memory, FIFO, bounded
        q.put(b)
    assert q.write_errors == 1
    assert q.dropped_samples == 2 + 3  # blocks 1 and 2 (2 and 3 samples) went for the bound
    assert [b.samples for b in drain(q)] == [1, 4, 5, 6]
    assert q.bytes == 0 and q.samples == 0
    q.close()
    assert [b.samples for b in drain(DiskQueue(tmp_path))] == []  # nothing torn left on disk


def test_the_block_being_sent_is_never_dropped_by_the_bound() -> None:
    """peek() hands out the head; while it is sent, puts past the bound drop older blocks behind
    it, never it, so that ack() removes exactly the block that was sent."""
    data = blocks(5)
    q = MemoryQueue(max_bytes=2 * len(data[0].data))
    q.put(data[0])
    q.put(data[1])
    sending = q.peek()
    assert sending is data[0]
    for b in data[2:]:
        q.put(b)
    assert q.dropped_samples == 2 + 3 + 4  # blocks 1, 2 and 3 went, not block 0 (nor the newest)
    q.ack()  # block 0 was sent
    assert [b.samples for b in drain(q)] == [5] and q.bytes == 0 and q.samples == 0
    assert not q.drop_oldest()


def test_disk_queue_keeps_the_segment_of_the_block_being_sent(tmp_path: Path) -> None:
    """The bound deletes the oldest segment but the one holding the block being sent (the next
    oldest goes instead), so a receiver that stays down does not stop the bound."""
    data = blocks(12, size=400)
    q = DiskQueue(tmp_path, max_bytes=1500, segment_bytes=500)  # two records per segment
    q.put(data[0])
    sending = q.peek()
    assert sending is not None and sending.samples == 1
    for b in data[1:]:
        q.put(b)
    assert q.dropped_samples > 0 and sum(p.stat().st_size for p in tmp_path.glob("*.seg")) <= 1500 + 2 * 416
    got = drain(q)  # the first ack is for block 0, still there
    assert got[0].samples == 1
    assert q.dropped_samples + sum(b.samples for b in got) == sum(b.samples for b in data)
    assert [b.samples for b in got] == sorted(b.samples for b in got)  # FIFO order kept
    q.close()


def test_replay_after_restart_is_oldest_first_in_bounded_memory(tmp_path: Path) -> None:
    """A queue of 48 MiB left by a killed relay (never closed: no fsync, no final cursor) is read
    back oldest first, one block at a time: the recovery and the replay allocate a small fraction of
    what is on disk, however much that is."""
    import tracemalloc

    size, n = 256 * 1024, 192
    q = DiskQueue(tmp_path, max_bytes=1 << 30, segment_bytes=4 << 20, memory_bytes=1 << 20)
    for i in range(n):
        q.put(Block(i.to_bytes(4, "little") + os.urandom(size - 4), samples=1))
    del q  # as SIGKILL: no close()
    tracemalloc.start()
    try:
        r = DiskQueue(tmp_path, max_bytes=1 << 30, segment_bytes=4 << 20, memory_bytes=1 << 20)
        assert len(r) == n and r.samples == n and r.bytes == n * size
        order = []
        while (b := r.peek()) is not None:
            order.append(int.from_bytes(b.data[:4], "little"))
            del b
            r.ack()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert order == list(range(n))  # oldest first, none lost, none twice
    assert peak < 4 * size, f"replay of {n * size >> 20} MiB peaked at {peak >> 10} KiB"
    r.close()
    assert not any(p.stat().st_size for p in tmp_path.glob("*.seg"))  # all acked: nothing to resend

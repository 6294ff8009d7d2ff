"""Prometheus remote write: the writer, its encoder (C twin beside the Python one), the queue.

    writer.py       RemoteWriter: shards, send loop, retries, drop reasons
    encode.py       WriteRequest encoding straight from a Batch, snappy; picks its C twin
    _encode_c.pyx   the C twin of encode.py
    queue.py        the queue of encoded, compressed blocks (memory or disk segments)
"""

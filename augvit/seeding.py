"""Stable seeds derived from integers, shared by the data order and the model's draws."""
from __future__ import annotations


def seed_for(*parts: int) -> int:
    """A stable 63-bit seed from integers (run seed, epoch, stream, ...)."""
    s = 0x9E3779B97F4A7C15
    for p in parts:
        s = (s ^ (int(p) + 0x9E3779B97F4A7C15 + (s << 6) + (s >> 2))) & ((1 << 63) - 1)
    return s

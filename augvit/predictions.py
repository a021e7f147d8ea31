"""Per-image test predictions as short text: every run's predictions live in git (eval/, a few
KB a run), so anyone can redo the analysis from a clone. They may also come from a remote, so
decoding is bounded and checked."""
from __future__ import annotations

import base64
import zlib

import numpy as np

_PRED_DTYPES = {"u1": np.dtype("u1"), "u2": np.dtype("<u2")}    # class ids < 256, < 65536


def encode_predictions(pred: np.ndarray, n_classes: int) -> str:
    """Predicted class ids (1-D, 0 <= id < n_classes <= 65536) as "u1:<n_classes>:<base64>":
    one byte per id (two above 256 classes), zlib-compressed; a JSON-safe string of under
    7 KB for 10,000 CIFAR-10 predictions (6.8 KB when the ids are uniformly random)."""
    p = np.asarray(pred)
    if p.ndim != 1 or not (p.size == 0 or np.issubdtype(p.dtype, np.integer)):
        raise ValueError(f"encode_predictions: need a 1-D integer array, got {p.dtype} "
                         f"{p.shape}")
    if not 1 <= n_classes <= 65536 or (p.size and not 0 <= p.min() <= p.max() < n_classes):
        raise ValueError(f"encode_predictions: class ids must lie in [0, n_classes) with "
                         f"1 <= n_classes <= 65536, got n_classes={n_classes}")
    code = "u1" if n_classes <= 256 else "u2"
    packed = zlib.compress(p.astype(_PRED_DTYPES[code]).tobytes(), 9)
    return f"{code}:{n_classes}:{base64.b64encode(packed).decode('ascii')}"


def decode_predictions(s: str, max_len: int = 1_000_000) -> np.ndarray:
    """The int64 class ids of an `encode_predictions` string. The string may come from a
    remote, so it is read with limits: a malformed header, non-base64 text, a payload that
    is not one complete zlib stream, more than max_len ids (checked while inflating, so a
    small string cannot make a large array) or an id >= n_classes raise a ValueError."""
    code, _, rest = s.partition(":") if isinstance(s, str) else ("", "", "")
    classes, _, payload = rest.partition(":")
    if code not in _PRED_DTYPES or not (classes.isascii() and classes.isdigit()
                                        and len(classes) <= 5):
        raise ValueError("decode_predictions: expected 'u1:<n_classes>:<base64>' or "
                         f"'u2:...', got a string starting {str(s)[:20]!r}")
    dtype, n_classes = _PRED_DTYPES[code], int(classes)
    max_bytes = max_len * dtype.itemsize
    # zlib never grows data by more than 5 bytes per 16 KB block plus a few header bytes
    if len(payload) > 4 * ((max_bytes + max_bytes // 1000 + 64) // 3 + 1):
        raise ValueError(f"decode_predictions: {len(payload)} characters is more than "
                         f"{max_len} predictions can take")
    try:
        packed = base64.b64decode(payload, validate=True)
    except ValueError as e:                          # binascii.Error is a ValueError
        raise ValueError(f"decode_predictions: the payload is not base64 ({e})") from None
    inflate = zlib.decompressobj()
    try:
        raw = inflate.decompress(packed, max_bytes + 1)
    except zlib.error as e:
        raise ValueError(f"decode_predictions: the payload is not zlib data ({e})") from None
    if len(raw) > max_bytes:
        raise ValueError(f"decode_predictions: more than max_len={max_len} predictions")
    if not inflate.eof or inflate.unused_data or len(raw) % dtype.itemsize:
        raise ValueError("decode_predictions: truncated data or trailing bytes")
    pred = np.frombuffer(raw, dtype=dtype).astype(np.int64)
    if pred.size and (n_classes == 0 or pred.max() >= n_classes):
        raise ValueError(f"decode_predictions: a class id >= n_classes={n_classes}")
    return pred


def correctness(pred: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Per-image correctness (bool, 1-D) of predicted class ids against true labels."""
    pred, labels = np.asarray(pred), np.asarray(labels)
    if pred.ndim != 1 or pred.shape != labels.shape:
        raise ValueError(f"correctness: need two 1-D arrays of one length, got {pred.shape} "
                         f"and {labels.shape}")
    return pred == labels

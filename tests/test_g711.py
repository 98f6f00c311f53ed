"""G.711 kernels (native and reference) against an independent spec implementation and audioop."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

with warnings.catch_warnings():  # deprecated in 3.11-3.12 (pyproject filters it in tests)
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # stdlib up to 3.12, the audioop-lts package (test extra) from 3.13

# ---------------------------------------------------------------------------------------------
# Independent spec implementation, one Python int at a time, written from the G.711 segment
# structure (exponent = position of the leading one, 4 mantissa bits) with G.191's input
# scaling: u-law works on the 14-bit value x >> 2 plus the bias 33 (0x84 >> 2), A-law on the
# 12-bit value x >> 4; negative samples use the one's complement -x - 1 before the shift.
# ---------------------------------------------------------------------------------------------


def spec_ulaw_encode(x: int) -> int:
    mag = (-x - 1 if x < 0 else x) >> 2
    biased = min(mag + 33, 8191)  # 33..8191: leading one at bit 5..12
    exponent = biased.bit_length() - 6
    mantissa = (biased >> (exponent + 1)) & 0xF
    code = 0x7F - ((exponent << 4) | mantissa)  # u-law transmits the complement
    return code | (0x80 if x >= 0 else 0)


def spec_alaw_encode(x: int) -> int:
    mag = (-x - 1 if x < 0 else x) >> 4  # 0..2047
    if mag < 16:
        exponent, mantissa = 0, mag
    else:
        exponent = mag.bit_length() - 4  # 1..7
        mantissa = (mag >> (exponent - 1)) & 0xF
    code = (exponent << 4) | mantissa | (0x80 if x >= 0 else 0)
    return code ^ 0x55  # even bits inverted


def spec_ulaw_decode(code: int) -> int:
    inv = ~code & 0xFF
    exponent, mantissa = (inv >> 4) & 7, inv & 0xF
    mag = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return mag if code & 0x80 else -mag


def spec_alaw_decode(code: int) -> int:
    c = code ^ 0x55
    exponent, mantissa = (c >> 4) & 7, c & 0xF
    mag = (mantissa << 4) + 8 if exponent == 0 else ((mantissa << 4) + 0x108) << (exponent - 1)
    return mag if c & 0x80 else -mag


ALL_PCM = np.arange(-32768, 32768, dtype=np.int16)
ALL_CODES = np.arange(256, dtype=np.uint8)
SPEC_ENC = {
    "ulaw": np.array([spec_ulaw_encode(int(x)) for x in ALL_PCM], dtype=np.uint8),
    "alaw": np.array([spec_alaw_encode(int(x)) for x in ALL_PCM], dtype=np.uint8),
}
SPEC_DEC = {
    "ulaw": np.array([spec_ulaw_decode(c) for c in range(256)], dtype=np.int16),
    "alaw": np.array([spec_alaw_decode(c) for c in range(256)], dtype=np.int16),
}
LAWS = ("ulaw", "alaw")


def _encode(backend, law, pcm):
    out = np.empty(len(pcm), np.uint8)
    assert getattr(backend.g711, f"{law}_encode")(pcm, out) == len(pcm)
    return out


def _decode(backend, law, codes):
    out = np.empty(len(codes), np.int16)
    assert getattr(backend.g711, f"{law}_decode")(codes, out) == len(codes)
    return out


def _audioop():
    return audioop


# --- exhaustive: every int16 input, every code ------------------------------------------------


@pytest.mark.parametrize("law", LAWS)
def test_encode_all_inputs_match_spec(backend, law):
    # All 65,536 inputs, bit-exact with the G.191 spec implementation above.
    np.testing.assert_array_equal(_encode(backend, law, ALL_PCM), SPEC_ENC[law])


@pytest.mark.parametrize("law", LAWS)
def test_decode_all_codes_match_spec(backend, law):
    np.testing.assert_array_equal(_decode(backend, law, ALL_CODES), SPEC_DEC[law])


@pytest.mark.parametrize("law", LAWS)
def test_bytes_kernels_all_values_match_spec(backend, law):
    # The bytes fast path: little-endian PCM in and out, same tables.
    enc = getattr(backend.g711, f"{law}_encode_bytes")(ALL_PCM.astype("<i2").tobytes())
    assert type(enc) is bytes and enc == SPEC_ENC[law].tobytes()
    dec = getattr(backend.g711, f"{law}_decode_bytes")(ALL_CODES.tobytes())
    assert type(dec) is bytes and dec == SPEC_DEC[law].astype("<i2").tobytes()


@pytest.mark.parametrize("law", LAWS)
def test_decode_all_codes_match_audioop(backend, law):
    audioop = _audioop()
    expected = getattr(audioop, f"{law}2lin")(ALL_CODES.tobytes(), 2)
    assert _decode(backend, law, ALL_CODES).astype("=i2").tobytes() == expected


def test_alaw_encode_all_inputs_match_audioop(backend):
    # audioop's A-law encoder uses the same one's-complement rounding: no difference at all.
    audioop = _audioop()
    expected = np.frombuffer(audioop.lin2alaw(ALL_PCM.tobytes(), 2), np.uint8)
    np.testing.assert_array_equal(_encode(backend, "alaw", ALL_PCM), expected)


def _ulaw_audioop_difference_set() -> np.ndarray:
    # docs/g711.md: audioop negates (-(x >> 2), a ceiling) where G.191 takes the one's complement
    # (~x >> 2, a floor), so its biased magnitude ceil(-x/4) + 33 is one larger. The code changes
    # exactly when that larger value is the first value of a quantisation interval:
    # B = (16 + j) << (e + 1) for segment e in 0..7 and interval j in 0..15, except B = 32 (never
    # reached, since ceil(-x/4) >= 1). For each B the four inputs with ceil(-x/4) = B - 33 differ.
    starts = [(16 + j) << (e + 1) for e in range(8) for j in range(16) if (e, j) != (0, 0)]
    return np.array(sorted(-4 * (b - 33) + r for b in starts for r in range(4)), dtype=np.int16)


def test_ulaw_encode_differs_from_audioop_on_exactly_the_documented_set(backend):
    audioop = _audioop()
    theirs = np.frombuffer(audioop.lin2ulaw(ALL_PCM.tobytes(), 2), np.uint8)
    # The difference, as found against the independent spec implementation ...
    spec_diff = ALL_PCM[SPEC_ENC["ulaw"] != theirs]
    documented = _ulaw_audioop_difference_set()
    assert len(documented) == 508
    np.testing.assert_array_equal(spec_diff, documented)
    # ... is also exactly where this backend differs, always by one code (audioop one lower:
    # the next larger magnitude), and only for negative inputs from -31612 to -1.
    ours = _encode(backend, "ulaw", ALL_PCM)
    differs = ours != theirs
    np.testing.assert_array_equal(ALL_PCM[differs], documented)
    np.testing.assert_array_equal(theirs[differs].astype(int), ours[differs].astype(int) - 1)
    assert documented.min() == -31612 and documented.max() == -1
    # The difference is in the encoder only: both decode each other's code to adjacent levels.
    assert np.all(np.diff(SPEC_DEC["ulaw"][[ours[differs][0], theirs[differs][0]]]) < 0)


# --- properties -------------------------------------------------------------------------------


@pytest.mark.parametrize("law", LAWS)
def test_encode_of_decode_round_trips_every_code(backend, law):
    # Every decoded level encodes back to its code; u-law's "negative zero" 0x7F is the one
    # exception (it decodes to 0, which encodes to the positive zero 0xFF).
    back = _encode(backend, law, _decode(backend, law, ALL_CODES))
    exceptions = {0x7F: 0xFF} if law == "ulaw" else {}
    expected = np.array([exceptions.get(c, c) for c in range(256)], dtype=np.uint8)
    np.testing.assert_array_equal(back, expected)


@pytest.mark.parametrize("law", LAWS)
def test_decode_of_encode_is_monotonic_and_close(backend, law):
    # Quantisation never reorders samples and stays within one step of the input.
    y = _decode(backend, law, _encode(backend, law, ALL_PCM)).astype(np.int32)
    assert np.all(np.diff(y) >= 0)
    x = ALL_PCM.astype(np.int32)
    # Largest step: u-law 1024 (segment 8), A-law 1024 (segment 7); clipping beyond the top
    # decision level (u-law +-32124, A-law +-32256) adds the remainder.
    top = 32124 if law == "ulaw" else 32256
    err = np.abs(y - np.clip(x, -top, top))
    assert err.max() <= 1024 // 2 + 4


@pytest.mark.parametrize("law", LAWS)
def test_decode_is_odd_symmetric(backend, law):
    # Flipping the sign bit negates the level (the code sets are sign-magnitude).
    y = _decode(backend, law, ALL_CODES).astype(np.int32)
    np.testing.assert_array_equal(y[:128], -y[128:])


def test_silence_codes(backend):
    zero = np.zeros(1, np.int16)
    assert _encode(backend, "ulaw", zero)[0] == 0xFF
    assert _encode(backend, "alaw", zero)[0] == 0xD5
    assert _decode(backend, "ulaw", np.array([0xFF, 0x7F], np.uint8)).tolist() == [0, 0]
    # A-law has no zero level: its silence code decodes to the smallest positive level.
    assert _decode(backend, "alaw", np.array([0xD5, 0x55], np.uint8)).tolist() == [8, -8]


@pytest.mark.parametrize("law", LAWS)
def test_known_code_points(backend, law):
    # Full scale: +32767 / -32768 map to the extreme codes.
    codes = _encode(backend, law, np.array([32767, -32768], np.int16)).tolist()
    assert codes == ([0x80, 0x00] if law == "ulaw" else [0xAA, 0x2A])


# --- kernel contract --------------------------------------------------------------------------


@pytest.mark.parametrize("law", LAWS)
def test_kernels_write_only_len_input_items(backend, law):
    pcm = ALL_PCM[1000:1005].copy()
    out = np.full(8, 0x11, np.uint8)
    assert getattr(backend.g711, f"{law}_encode")(pcm, out) == 5
    np.testing.assert_array_equal(out[:5], SPEC_ENC[law][1000:1005])
    assert out[5:].tolist() == [0x11] * 3
    pcm_out = np.full(4, 7, np.int16)
    assert getattr(backend.g711, f"{law}_decode")(np.array([0, 1], np.uint8), pcm_out) == 2
    assert pcm_out[2:].tolist() == [7, 7]


@pytest.mark.parametrize("law", LAWS)
def test_kernels_accept_empty_and_read_only_input(backend, law):
    assert getattr(backend.g711, f"{law}_encode")(np.empty(0, np.int16), np.empty(0, np.uint8)) == 0
    ro = ALL_PCM[:10].copy()
    ro.flags.writeable = False
    out = np.empty(10, np.uint8)
    assert getattr(backend.g711, f"{law}_encode")(ro, out) == 10
    assert getattr(backend.g711, f"{law}_encode_bytes")(b"") == b""
    assert getattr(backend.g711, f"{law}_decode_bytes")(b"") == b""
    # Any C-contiguous buffer works for the bytes kernels.
    assert getattr(backend.g711, f"{law}_decode_bytes")(bytearray([1, 2, 3])) == (
        SPEC_DEC[law][[1, 2, 3]].astype("<i2").tobytes()
    )


@pytest.mark.parametrize("law", LAWS)
def test_kernel_rejects_short_out(backend, law):
    with pytest.raises(ValueError, match="out holds 3 items, the input needs 4"):
        getattr(backend.g711, f"{law}_encode")(np.zeros(4, np.int16), np.empty(3, np.uint8))
    with pytest.raises(ValueError, match="out holds 1 items, the input needs 2"):
        getattr(backend.g711, f"{law}_decode")(np.zeros(2, np.uint8), np.empty(1, np.int16))


@pytest.mark.parametrize("law", LAWS)
def test_kernel_rejects_wrong_buffers(backend, law):
    enc = getattr(backend.g711, f"{law}_encode")
    with pytest.raises(ValueError, match="dtype mismatch"):
        enc(np.zeros(4, np.float32), np.empty(4, np.uint8))
    with pytest.raises(ValueError, match="dtype mismatch"):
        enc(np.zeros(4, np.int16), np.empty(4, np.int8))
    with pytest.raises(ValueError, match="C-contiguous|contiguous"):
        enc(np.zeros(8, np.int16)[::2], np.empty(4, np.uint8))
    ro = np.empty(4, np.uint8)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        enc(np.zeros(4, np.int16), ro)
    with pytest.raises(ValueError, match="whole 2-byte samples, got 3 bytes"):
        getattr(backend.g711, f"{law}_encode_bytes")(b"abc")


def test_encode_bytes_reads_little_endian(backend):
    # b"\x00\x80" is -32768 in little-endian order, whatever the host's byte order.
    assert backend.g711.ulaw_encode_bytes(b"\x00\x80\xff\x7f") == bytes([0x00, 0x80])

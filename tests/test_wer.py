"""Tests for sis_stream.text: normalisation, number spelling, alignment counts, WER/CER."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sis_stream import text as W


def _naive_distance(ref: list[str], hyp: list[str]) -> int:
    # Textbook Levenshtein DP, the oracle for the vectorised alignment.
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i]
        for j, h in enumerate(hyp, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h)))
        prev = cur
    return prev[-1]


# Normalisation lower-cases, strips punctuation and treats hyphens as spaces.
@pytest.mark.parametrize(("text", "expected"), [
    ("Hello, World!", "hello world"),
    ("  Turn   on\tthe LIGHT.  ", "turn on the light"),
    ("forty-two", "forty two"),
    ("Don't stop", "dont stop"),
    ("Don’t stop", "dont stop"),
    ("“Quoted” (text) — here…", "quoted text here"),
    ("欢迎使用，华为云。", "欢迎使用 华为云"),
    ("", ""),
])
def test_normalize_text(text, expected):
    assert W.normalize_text(text) == expected


# Digits are spelled as spoken words by default, kept with numbers="keep".
@pytest.mark.parametrize(("text", "expected"), [
    ("42", "forty two"),
    ("at 9 am", "at nine am"),
    ("1,000 people", "one thousand people"),
    ("3.5 miles", "three point five miles"),
    ("the 21st time", "the twenty first time"),
    ("2nd 3rd 4th 12th 20th", "second third fourth twelfth twentieth"),
    ("50% off", "fifty percent off"),
    ("1234567", "one million two hundred thirty four thousand five hundred sixty seven"),
    ("100", "one hundred"),
    ("0", "zero"),
])
def test_numbers_as_words(text, expected):
    assert W.normalize_text(text) == expected


def test_numbers_keep():
    # With numbers="keep", "42" stays a digit token and differs from "forty two".
    assert W.normalize_text("Call 42!", numbers="keep") == "call 42"
    assert W.wer("call 42", "call forty two", numbers="keep") == 1.0
    assert W.wer("call 42", "call forty-two") == 0.0


@pytest.mark.parametrize(("n", "words"), [
    (0, "zero"), (7, "seven"), (19, "nineteen"), (20, "twenty"), (99, "ninety nine"),
    (101, "one hundred one"), (1000, "one thousand"), (2_000_017, "two million seventeen"),
    (10**12, "one trillion"),
])
def test_number_to_words(n, words):
    assert W.number_to_words(n) == words


def test_number_to_words_bad_input():
    with pytest.raises(TypeError, match="n must be int"):
        W.number_to_words(1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="n must be int"):
        W.number_to_words(True)
    with pytest.raises(ValueError, match=r"n must be in \[0, 10\*\*15\)"):
        W.number_to_words(-1)
    with pytest.raises(ValueError, match=r"n must be in"):
        W.number_to_words(10**15)


@pytest.mark.parametrize(("ref", "hyp", "sdi"), [
    ("a b c", "a x c", (1, 0, 0)),
    ("a b c", "a c", (0, 1, 0)),
    ("a b", "a z b", (0, 0, 1)),
    ("the cat sat down", "cat sat down now", (0, 1, 1)),
])
def test_wer_counts_each_operation(ref, hyp, sdi):
    # Unambiguous alignments: the backtrace reports the right kind of edit.
    c = W.word_errors(ref, hyp)
    assert (c.substitutions, c.deletions, c.insertions) == sdi
    assert c.errors == sum(sdi)
    assert c.rate == pytest.approx(sum(sdi) / len(ref.split()))


def test_wer_examples():
    assert W.wer("Turn on the light, please.", "turn on the lights please") == pytest.approx(0.2)
    assert W.wer("a b c", "a b c") == 0.0
    assert W.wer("a b c", "") == 1.0
    assert W.wer("a", "x y z") == 3.0  # insertions can push WER above 1


def test_empty_reference():
    assert W.wer("", "") == 0.0
    assert W.wer("...", "") == 0.0  # only punctuation normalises to nothing
    assert W.wer("", "hello") == float("inf")


def test_cer_ignores_whitespace_and_fits_mandarin():
    assert W.cer("欢迎使用", "欢迎使") == pytest.approx(0.25)
    assert W.cer("hello world", "helloworld") == 0.0
    c = W.char_errors("abcd", "abxd")
    assert (c.substitutions, c.deletions, c.insertions) == (1, 0, 0)


def test_error_counts_pool():
    total = W.word_errors("a b", "a c") + W.word_errors("d e f", "d e f")
    assert total.reference_length == 5 and total.errors == 1
    assert total.rate == pytest.approx(0.2)


# The vectorised alignment agrees with the textbook DP, and S+D+I equals the distance.
@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from("abcde"), max_size=12), st.lists(st.sampled_from("abcde"), max_size=12))
def test_alignment_matches_naive_dp(ref, hyp):
    c = W._align(ref, hyp)
    assert c.errors == _naive_distance(ref, hyp)
    assert c.reference_length == len(ref)
    # Every reference token is matched, substituted or deleted; every hypothesis token likewise.
    assert c.deletions <= len(ref) and c.insertions <= len(hyp)
    assert len(ref) - c.deletions == len(hyp) - c.insertions


def test_bad_arguments():
    with pytest.raises(TypeError, match="text must be str, got bytes"):
        W.wer(b"abc", "abc")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="text must be str, got NoneType"):
        W.cer("abc", None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="numbers must be 'words' or 'keep'"):
        W.wer("a", "a", numbers="digits")  # type: ignore[arg-type]


def test_alignment_size_is_bounded(monkeypatch):
    monkeypatch.setattr(W, "MAX_ALIGNMENT_CELLS", 100)
    with pytest.raises(ValueError, match="exceeds 100 cells; score shorter pieces"):
        W.wer(" ".join(["a"] * 20), " ".join(["b"] * 20))

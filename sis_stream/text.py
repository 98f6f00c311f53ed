"""Word and character error rates with text normalisation, for scoring recognisers.

Normalisation (:func:`normalize_text`), applied to reference and hypothesis alike:

1. Unicode NFKC, then ``casefold()`` (lower case);
2. numbers: with ``numbers="words"`` (default) digit strings become spoken English words, so a
   reference "42" matches a hypothesis "forty-two": integers (commas as thousands separators
   allowed: "1,000"), decimals ("3.5" -> "three point five"), ordinals ("21st" -> "twenty first"),
   and "%" -> "percent". With ``numbers="keep"`` digits stay as they are (and "42" != "forty two");
3. hyphens, slashes and other dashes become spaces ("forty-two" -> "forty two");
4. apostrophes are removed inside words ("don't" -> "dont", on both sides alike);
5. every other Unicode punctuation or symbol character is removed;
6. whitespace is collapsed.

WER = (substitutions + deletions + insertions) / reference words, by Levenshtein alignment over
words. CER is the same over characters, with whitespace removed first, so it also suits scripts
written without spaces (Mandarin). Both can exceed 1 when the hypothesis has many insertions. An
empty reference gives 0.0 for an empty hypothesis and ``inf`` otherwise.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Final, Literal

import numpy as np

__all__ = [
    "MAX_ALIGNMENT_CELLS",
    "ErrorCounts",
    "cer",
    "char_errors",
    "normalize_text",
    "number_to_words",
    "wer",
    "word_errors",
]

NumberPolicy = Literal["words", "keep"]
#: Bound on the alignment matrix (reference x hypothesis tokens): 2e7 int32 cells = 80 MB. Longer
#: inputs raise ValueError ("error" policy): score them in pieces (per utterance).
MAX_ALIGNMENT_CELLS: Final = 20_000_000

_ONES: Final = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"]
_TENS: Final = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_SCALES: Final = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand"))
_ORDINAL_WORDS: Final = {
    "one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
    "nine": "ninth", "twelve": "twelfth",
}
# "1,000,000" / "3.14" / "21st" / "42"; optional trailing "%".
_NUMBER_RE: Final = re.compile(
    r"(?<![\w.])(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+))?(st|nd|rd|th)?(%)?(?![\w])"
)
_DASHES_RE: Final = re.compile(r"[\-\u2010-\u2015\u2212/]")
_APOSTROPHES_RE: Final = re.compile(r"['\u2019\u02bc`]")


@dataclass(frozen=True)
class ErrorCounts:
    """Edit operations of an alignment.

    Attributes
    ----------
    substitutions, deletions, insertions : int
        Edit counts (deletion = reference token missing from the hypothesis).
    reference_length : int
        Tokens in the reference.
    """

    substitutions: int
    deletions: int
    insertions: int
    reference_length: int

    @property
    def errors(self) -> int:
        """Total edits."""
        return self.substitutions + self.deletions + self.insertions

    @property
    def rate(self) -> float:
        """errors / reference_length (0.0 for two empty inputs, inf for an empty reference only)."""
        if self.reference_length == 0:
            return 0.0 if self.errors == 0 else float("inf")
        return self.errors / self.reference_length

    def __add__(self, other: ErrorCounts) -> ErrorCounts:
        """Pool counts over several utterances (corpus-level WER)."""
        return ErrorCounts(self.substitutions + other.substitutions, self.deletions + other.deletions,
                           self.insertions + other.insertions, self.reference_length + other.reference_length)


def number_to_words(n: int) -> str:
    """Spell a non-negative integer in English words ("1234" -> "one thousand two hundred thirty four").

    Parameters
    ----------
    n : int
        0 <= n < 10**15.

    Raises
    ------
    TypeError
        If `n` is not an int.
    ValueError
        If `n` is out of range.
    """
    if not isinstance(n, int) or isinstance(n, bool):
        raise TypeError(f"n must be int, got {type(n).__name__}")
    if not 0 <= n < 10**15:
        raise ValueError(f"n must be in [0, 10**15), got {n}")
    if n < 20:
        return _ONES[n]
    if n < 100:
        tens, ones = divmod(n, 10)
        return _TENS[tens] + ("" if ones == 0 else " " + _ONES[ones])
    if n < 1000:
        hundreds, rest = divmod(n, 100)
        return _ONES[hundreds] + " hundred" + ("" if rest == 0 else " " + number_to_words(rest))
    for value, name in _SCALES:
        if n >= value:
            head, rest = divmod(n, value)
            return number_to_words(head) + " " + name + ("" if rest == 0 else " " + number_to_words(rest))
    raise AssertionError("unreachable")  # pragma: no cover


def _ordinal(words: str) -> str:
    head, _, last = words.rpartition(" ")
    if last in _ORDINAL_WORDS:
        last = _ORDINAL_WORDS[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last = last + "th"
    return (head + " " + last).strip()


def _spell_number(m: re.Match[str]) -> str:
    integer, fraction, suffix, percent = m.group(1), m.group(2), m.group(3), m.group(4)
    digits = integer.replace(",", "")
    if len(digits) > 15:
        return m.group(0)  # too long to be a spoken number: leave as is
    words = number_to_words(int(digits))
    if fraction:
        words += " point " + " ".join(_ONES[int(d)] for d in fraction)
    elif suffix:
        words = _ordinal(words)
    if percent:
        words += " percent"
    return f" {words} "


def normalize_text(text: str, *, numbers: NumberPolicy = "words") -> str:
    """Normalise text for scoring (see the module docstring for the exact rules).

    Parameters
    ----------
    text : str
        Reference or hypothesis.
    numbers : {"words", "keep"}
        Spell digit strings as English words (default) or keep them.

    Returns
    -------
    str
        Lower-case words separated by single spaces.

    Raises
    ------
    TypeError
        If `text` is not a str.
    ValueError
        For an unknown `numbers` policy.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be str, got {type(text).__name__}")
    if numbers not in ("words", "keep"):
        raise ValueError(f"numbers must be 'words' or 'keep', got {numbers!r}")
    s = unicodedata.normalize("NFKC", text).casefold()
    if numbers == "words":
        s = _NUMBER_RE.sub(_spell_number, s)
    s = _DASHES_RE.sub(" ", s)
    s = _APOSTROPHES_RE.sub("", s)
    s = "".join(" " if unicodedata.category(c)[0] in "PS" else c for c in s)
    return " ".join(s.split())


def _align(ref: list[str], hyp: list[str]) -> ErrorCounts:
    n, m = len(ref), len(hyp)
    if n == 0 or m == 0:
        return ErrorCounts(0, n, m, n)
    if (n + 1) * (m + 1) > MAX_ALIGNMENT_CELLS:
        raise ValueError(
            f"alignment of {n} x {m} tokens exceeds {MAX_ALIGNMENT_CELLS} cells; score shorter pieces"
        )
    # Map tokens to ints so each row compares vectorised.
    vocab: dict[str, int] = {}
    r = np.array([vocab.setdefault(t, len(vocab)) for t in ref], dtype=np.int64)
    h = np.array([vocab.setdefault(t, len(vocab)) for t in hyp], dtype=np.int64)
    d = np.empty((n + 1, m + 1), dtype=np.int32)
    d[0] = np.arange(m + 1)
    offsets = np.arange(m + 1, dtype=np.int32)
    for i in range(1, n + 1):
        prev = d[i - 1]
        # Best of deletion (from above) and substitution/match (diagonal), per column...
        row = np.empty(m + 1, dtype=np.int32)
        row[0] = i
        row[1:] = np.minimum(prev[1:] + 1, prev[:-1] + (h != r[i - 1]))
        # ...then insertions along the row: row[j] = min_k<=j (row[k] + j - k), a running minimum.
        d[i] = np.minimum.accumulate(row - offsets) + offsets
    # Backtrace for the operation counts (prefer match/substitution, then deletion, then insertion).
    i, j = n, m
    subs = dels = ins = 0
    while i > 0 or j > 0:
        if i > 0 and j > 0 and d[i, j] == d[i - 1, j - 1] + (ref[i - 1] != hyp[j - 1]):
            subs += ref[i - 1] != hyp[j - 1]
            i, j = i - 1, j - 1
        elif i > 0 and d[i, j] == d[i - 1, j] + 1:
            dels += 1
            i -= 1
        else:
            ins += 1
            j -= 1
    return ErrorCounts(int(subs), dels, ins, n)


def word_errors(reference: str, hypothesis: str, *, numbers: NumberPolicy = "words") -> ErrorCounts:
    """Word-level edit counts after :func:`normalize_text`.

    Parameters
    ----------
    reference, hypothesis : str
        The true text and the recogniser's text.
    numbers : {"words", "keep"}
        Number policy of :func:`normalize_text`.

    Returns
    -------
    ErrorCounts

    Raises
    ------
    TypeError
        If either text is not a str.
    ValueError
        For an unknown number policy or inputs longer than ``MAX_ALIGNMENT_CELLS`` allows.
    """
    return _align(normalize_text(reference, numbers=numbers).split(),
                  normalize_text(hypothesis, numbers=numbers).split())


def char_errors(reference: str, hypothesis: str, *, numbers: NumberPolicy = "words") -> ErrorCounts:
    """Character-level edit counts after :func:`normalize_text`, whitespace removed.

    Parameters and errors as for :func:`word_errors`.
    """
    return _align(list(normalize_text(reference, numbers=numbers).replace(" ", "")),
                  list(normalize_text(hypothesis, numbers=numbers).replace(" ", "")))


def wer(reference: str, hypothesis: str, *, numbers: NumberPolicy = "words") -> float:
    """Word error rate of `hypothesis` against `reference` (see :func:`word_errors`).

    Examples
    --------
    >>> wer("Turn on the light, please.", "turn on the lights please")
    0.2
    >>> wer("Call me at 9", "call me at nine")
    0.0
    """
    return word_errors(reference, hypothesis, numbers=numbers).rate


def cer(reference: str, hypothesis: str, *, numbers: NumberPolicy = "words") -> float:
    """Character error rate of `hypothesis` against `reference` (see :func:`char_errors`).

    Examples
    --------
    >>> cer("欢迎使用", "欢迎使")
    0.25
    """
    return char_errors(reference, hypothesis, numbers=numbers).rate

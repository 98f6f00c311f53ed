"""Text post-processing of engine transcripts: ``add_punc`` and ``digit_norm``.

A private helper of :mod:`.recognizer` (which re-exports these names); see its docstring for
the rules.
"""

from __future__ import annotations

import re
from typing import Final

from ..engines.zh_text import postprocess_zh
from ..text import number_to_words

__all__ = ["digits_to_words", "postprocess_text", "words_to_digits"]


_NUM_WORDS: Final = {
    "zero": 0, "oh": None, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14,
    "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20,
    "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90,
}
_SCALES: Final = {"hundred": 100, "thousand": 1000, "million": 10**6, "billion": 10**9}
_PUNCT_RE: Final = re.compile(r"(?<!\d)[.,!?;:\"“”‘’«»…()\[\]{}]|[.,](?!\d)|[!?;:\"“”…()\[\]{}]")
_DIGITS_RE: Final = re.compile(r"\b\d{1,15}\b")


def words_to_digits(text: str) -> str:
    """Replace runs of spelled English cardinal numbers by digits (``"twenty three"`` -> ``"23"``).

    Handles ``zero``..``nine hundred ninety nine billion ...`` with ``hundred/thousand/million/
    billion`` scales and optional ``and``; anything else is left untouched.
    """
    tokens = text.split()
    out: list[str] = []
    i = 0
    while i < len(tokens):
        j, total, current, seen = i, 0, 0, False
        while j < len(tokens):
            w = tokens[j].lower().strip(",.")
            if w in _NUM_WORDS and _NUM_WORDS[w] is not None:
                v = _NUM_WORDS[w]
                if seen and current % 10 != 0 and v < 10:
                    break  # "two three" is two numbers
                if seen and current % 100 == 0 and current and v < 100 and current < 100:
                    break
                current += v
                seen = True
            elif w in _SCALES and seen:
                scale = _SCALES[w]
                if scale == 100:
                    current *= 100
                else:
                    total += current * scale
                    current = 0
            elif w == "and" and seen and j + 1 < len(tokens) and tokens[j + 1].lower() in _NUM_WORDS:
                pass
            else:
                break
            j += 1
        if seen:
            trail = tokens[j - 1][-1] if tokens[j - 1][-1] in ",." else ""
            out.append(str(total + current) + trail)
            i = j
        else:
            out.append(tokens[i])
            i += 1
    return " ".join(out)


def digits_to_words(text: str) -> str:
    """Spell integers in English words (``"23"`` -> ``"twenty three"``)."""
    return _DIGITS_RE.sub(lambda m: number_to_words(int(m.group(0))), text)


def postprocess_text(text: str, *, add_punc: bool, digit_norm: bool, punctuated: bool, language: str) -> str:
    """Apply ``add_punc`` and ``digit_norm`` to an engine transcript (see the module docstring)."""
    text = " ".join(text.split())
    if not text:
        return text
    if language == "zh":  # Mandarin rules: full-width punctuation, Chinese numerals <-> digits
        return postprocess_zh(text, add_punc=add_punc, digit_norm=digit_norm)
    if language == "en":
        text = words_to_digits(text) if digit_norm else digits_to_words(text)
    if punctuated and not add_punc:
        text = " ".join(_PUNCT_RE.sub("", text).split())
    elif not punctuated and add_punc:
        text = text[0].upper() + text[1:]
        if text[-1] not in ".!?":
            text += "."
    return text

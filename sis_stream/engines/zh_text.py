"""Mandarin text as the cloud gives it: Simplified characters, ``add_punc``, ``digit_norm``.

* :func:`to_simplified`: Traditional -> Simplified with OpenCC (``t2s``, Apache-2.0).
* :func:`postprocess_zh`: the SIS options on a Mandarin transcript. ``add_punc=yes`` turns ASCII
  punctuation next to Chinese characters into full-width (``，。？！：；``), a pause (a space between
  two Chinese characters, as Whisper writes it) into ``，`` and ends the sentence with ``。``;
  ``add_punc=no`` removes every punctuation mark and the spaces between Chinese characters.
  ``digit_norm=yes`` writes Chinese numbers as digits (:func:`chinese_to_digits`), ``no`` spells
  digits in Chinese (:func:`digits_to_chinese`). Latin words (mixed Chinese-English speech) are
  kept as spoken, with the spaces between them.
* :func:`split_characters`: a Whisper word token cut into characters (Latin runs stay whole), for
  ``need_word_info`` character timings.

Number rules (a heuristic, documented so the output is predictable): a run of two or more numeral
characters that forms a well-formed number is converted (``二十三`` -> ``23``, ``一百零五`` ->
``105``, ``三千二`` -> ``3200``, ``三点一四`` -> ``3.14``, ``一三八零零`` -> ``13800``,
``百分之五十`` -> ``50%``); a single numeral (``一样``, ``十分``, ``万人``) and idiom-like runs
(``一一``, ``千万``, ``三三两两``) are left alone. Digits become Chinese positionally (``105`` ->
``一百零五``), digit by digit for years (``2024年``), leading zeros and more than eight digits.
"""

from __future__ import annotations

import re
import threading
from typing import Any, Final

from ..errors import EngineUnavailableError

__all__ = [
    "chinese_to_digits",
    "digits_to_chinese",
    "int_to_chinese",
    "is_cjk",
    "postprocess_zh",
    "split_characters",
    "strip_punctuation",
    "to_simplified",
]

_converter: Any = None
_converter_lock = threading.Lock()

_DIGITS: Final = {"零": 0, "〇": 0, "幺": 1, "一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5,
                  "六": 6, "七": 7, "八": 8, "九": 9}
_UNITS: Final = {"十": 10, "百": 100, "千": 1000}
_BIG: Final = {"万": 10_000, "亿": 100_000_000}
_NUM_RUN: Final = re.compile(r"(百分之)?([零〇幺一二两三四五六七八九十百千万亿]+(?:点[零〇幺一二三四五六七八九]+)?)")
_ARABIC: Final = re.compile(r"(\d+)(\.\d+)?(%?)")
_CN_DIGITS: Final = "零一二三四五六七八九"
# Full-width for ASCII marks next to Chinese; every mark add_punc=no removes.
_FULL: Final = {",": "，", ".": "。", "?": "？", "!": "！", ":": "：", ";": "；"}
_PUNCT_CHARS: Final = "，。？！：；、…“”‘’《》〈〉「」『』（）【】—～·,.?!:;\"()[]{}<>~"


def is_cjk(ch: str) -> bool:
    """True for a CJK ideograph (the characters Mandarin transcripts are written in)."""
    o = ord(ch)
    return 0x4E00 <= o <= 0x9FFF or 0x3400 <= o <= 0x4DBF or 0x20000 <= o <= 0x2FA1F or 0xF900 <= o <= 0xFAFF


def to_simplified(text: str) -> str:
    """Convert Traditional characters to Simplified (OpenCC ``t2s``); other text is unchanged.

    Raises
    ------
    EngineUnavailableError
        If the ``opencc`` package is not installed.
    """
    global _converter
    if not text:
        return text
    with _converter_lock:
        if _converter is None:
            try:
                import opencc
            except ImportError as exc:
                raise EngineUnavailableError(
                    "Mandarin output needs OpenCC for Simplified characters: `pip install "
                    "'sis-stream[engines]'` (opencc)"
                ) from exc
            _converter = opencc.OpenCC("t2s")
        return _converter.convert(text)


def split_characters(token: str) -> list[str]:
    """Cut a word token into Chinese characters; Latin/digit runs stay whole; punctuation dropped."""
    out: list[str] = []
    latin = ""
    for ch in token:
        if is_cjk(ch):
            if latin:
                out.append(latin)
                latin = ""
            out.append(ch)
        elif ch.isalnum() or (ch in "'.-%" and latin):
            latin += ch
        else:
            if latin:
                out.append(latin)
                latin = ""
    if latin:
        out.append(latin.rstrip(".-"))
    return [w for w in out if w]


def _section(s: str) -> int | None:
    """A number below 10 000 written with 千百十 (``三千二`` = 3200, ``十五`` = 15)."""
    if not s:
        return 0
    total, digit, last_unit, zero_seen = 0, None, 10_000, False
    for ch in s:
        if ch in _DIGITS:
            if digit is not None:
                return None  # two digits in a row inside a positional number
            digit = _DIGITS[ch]
            if digit == 0:
                zero_seen = True
                digit = None
        elif ch in _UNITS:
            unit = _UNITS[ch]
            if unit >= last_unit:
                return None
            if digit is None:
                if unit != 10 or total:  # only a leading 十 may stand alone
                    return None
                digit = 1
            total += digit * unit
            digit, last_unit, zero_seen = None, unit, False
        else:
            return None
    if digit is not None:
        # colloquial: 三千二 = 3200, 一百五 = 150 (the digit takes the next lower unit)
        total += digit * (last_unit // 10 if last_unit <= 1000 and not zero_seen else 1)
    return total


def _parse_int(s: str) -> int | None:
    if not s or s[0] in _BIG or s[0] in "百千":
        return None
    if not any(ch in _UNITS or ch in _BIG for ch in s):
        return None  # plain digit strings are read digit by digit by the caller
    total = 0
    rest = s
    for big_ch, big in sorted(_BIG.items(), key=lambda kv: -kv[1]):
        if big_ch in rest:
            head, rest = rest.split(big_ch, 1)
            value = _parse_int_small(head)
            if value is None or value == 0:
                return None
            total += value * big
            if rest and rest[0] in _DIGITS and rest[0] != "零" and len(rest) == 1:
                return total + _DIGITS[rest] * big // 10  # 一万五 = 15000
    tail = _parse_int_small(rest)
    if tail is None:
        return None
    return total + tail


def _parse_int_small(s: str) -> int | None:
    if any(ch in _BIG for ch in s):
        return _parse_int(s)
    return _section(s)


def _convert_run(prefix: str | None, run: str) -> str | None:
    """Digits for one numeral run, or None to leave it as written."""
    int_part, _, frac = run.partition("点")
    if frac and not int_part:
        return None
    digit_only = all(ch in _DIGITS and ch != "两" for ch in int_part)
    if digit_only:
        if len(int_part) < 2 and not frac and not prefix:
            return None
        if len(int_part) == 2 and int_part[0] == int_part[1] and not frac and not prefix:
            return None  # 一一, 三三: idiom-like
        if frac or prefix:
            value = _section(int_part) if len(int_part) == 1 else None
            head = str(value) if value is not None else "".join(str(_DIGITS[c]) for c in int_part)
        else:
            head = "".join(str(_DIGITS[c]) for c in int_part)
    else:
        if len(int_part) < 2 and not frac and not prefix:
            return None  # a single 十/百/千/万/亿
        value = _parse_int(int_part)
        if value is None:
            return None
        head = str(value)
    out = head + ("." + "".join(str(_DIGITS[c]) for c in frac) if frac else "")
    return out + "%" if prefix else out


def chinese_to_digits(text: str) -> str:
    """Write well-formed Chinese numbers as digits (see the module docstring for the rules)."""
    def repl(m: re.Match[str]) -> str:
        prefix, run = m.group(1), m.group(2)
        conv = _convert_run(prefix, run)
        return m.group(0) if conv is None else conv
    return _NUM_RUN.sub(repl, text)


def int_to_chinese(n: int) -> str:
    """A non-negative integer in Chinese numerals, positionally (``105`` -> ``一百零五``)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if n == 0:
        return "零"

    def below_10k(x: int) -> str:
        out, zero = "", False
        for unit, ch in ((1000, "千"), (100, "百"), (10, "十"), (1, "")):
            d = x // unit % 10
            if d:
                if zero and out:
                    out += "零"
                out += _CN_DIGITS[d] + ch
                zero = False
            else:
                zero = True
        return out

    parts: list[str] = []
    need_zero = False
    for big, ch in ((100_000_000, "亿"), (10_000, "万"), (1, "")):
        chunk = n // big % 10_000 if big < 100_000_000 else n // big
        if chunk:
            if need_zero or (parts and chunk < 1000):
                parts.append("零")
            parts.append((int_to_chinese(chunk) if chunk >= 10_000 else below_10k(chunk)) + ch)
            need_zero = False
        elif parts:
            need_zero = True
    text = "".join(parts)
    if text.startswith("一十"):
        text = text[1:]  # 十五, not 一十五
    return text


def digits_to_chinese(text: str) -> str:
    """Spell digits in Chinese (see the module docstring for the rules)."""
    def repl(m: re.Match[str]) -> str:
        whole, frac, pct = m.group(1), m.group(2) or "", m.group(3)
        after = text[m.end():m.end() + 1]
        if whole.startswith("0") and len(whole) > 1 or len(whole) > 8 or after == "年":
            head = "".join(_CN_DIGITS[int(c)] for c in whole)
        else:
            head = int_to_chinese(int(whole))
        if frac:
            head += "点" + "".join(_CN_DIGITS[int(c)] for c in frac[1:])
        return "百分之" + head if pct else head
    return _ARABIC.sub(repl, text)


def _squeeze_spaces(text: str, joiner: str) -> str:
    """Replace whitespace between two Chinese characters by `joiner`; other spacing collapses to one."""
    text = " ".join(text.split())
    return re.sub(r"(?<=[\u3400-\u9fff\uf900-\ufaff]) (?=[\u3400-\u9fff\uf900-\ufaff])", joiner, text)


def strip_punctuation(text: str) -> str:
    """Remove punctuation (``add_punc=no``), keeping decimal points, ``%`` and word-internal ``'``."""
    text = re.sub(r"(?<!\d)\.|\.(?!\d)", " ", text)
    text = "".join(" " if ch in _PUNCT_CHARS and ch != "." else ch for ch in text)
    text = _squeeze_spaces(text, "")
    # no space between a Chinese character and a neighbouring mark that was removed
    text = re.sub(r"(?<=[\u3400-\u9fff]) (?=[\u3400-\u9fff])", "", text)
    return text.strip()


def _full_width(text: str) -> str:
    def repl(m: re.Match[str]) -> str:
        ch = m.group(0)
        before = text[m.start() - 1] if m.start() else ""
        after = text[m.end()] if m.end() < len(text) else ""
        if ch == "." and before.isdigit() and after.isdigit():
            return ch  # decimal point
        if (before and is_cjk(before)) or (after and is_cjk(after)):
            return _FULL[ch]
        return ch
    text = re.sub(r"[,.?!:;]", repl, text)
    # no space after a full-width mark
    return re.sub(r"\s*([，。？！：；、])\s*", r"\1", text)


def postprocess_zh(text: str, *, add_punc: bool, digit_norm: bool) -> str:
    """Apply ``add_punc`` and ``digit_norm`` to a Mandarin transcript (Simplified already).

    Parameters
    ----------
    text : str
        The engine's transcript.
    add_punc : bool
        Keep (normalised to full-width) or strip punctuation.
    digit_norm : bool
        Chinese numbers -> digits (True) or digits -> Chinese numbers (False).

    Returns
    -------
    str
    """
    text = " ".join(text.split())
    if not text:
        return text
    text = chinese_to_digits(text) if digit_norm else digits_to_chinese(text)
    if not add_punc:
        return strip_punctuation(text)
    text = _full_width(_squeeze_spaces(text, "，"))
    chinese = any(is_cjk(c) for c in text)
    last = text[-1]
    if is_cjk(last) or last.isalnum():
        text += "。" if chinese else "."
    elif chinese and last in _FULL:
        text = text[:-1] + _FULL[last]  # a Chinese sentence ends with a full-width mark
    return text

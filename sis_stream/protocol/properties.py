"""The one table of SIS ``property`` values per interface, with sample rate and language."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Final

__all__ = [
    "Interface",
    "PropertyInfo",
    "PROPERTIES",
    "properties_for",
    "lookup_property",
]


class Interface(str, Enum):
    """A SIS API family; each has its own list of accepted ``property`` values."""

    #: Real-time ASR websocket, all three modes (sis-protocol.md §4.3).
    RASR = "rasr"
    #: Short-audio recognition: REST ``POST /v1/{pid}/asr/short-audio`` and its websocket form
    #: (§11.1, §10).
    SHORT_AUDIO = "short_audio"
    #: Recording-file transcriber jobs (§11.3).
    TRANSCRIBER = "transcriber"
    #: Flash ASR (§11.4).
    FLASH = "flash"
    #: Text to speech voices (§11.5); ``rates_hz`` lists the allowed ``sample_rate`` values.
    TTS = "tts"


@dataclass(frozen=True)
class PropertyInfo:
    """One ``property`` value of one interface.

    Attributes
    ----------
    name : str
        The wire value, e.g. ``"chinese_16k_general"``.
    interface : Interface
        The API family it belongs to.
    rates_hz : tuple of int
        Sample rates it works at: exactly one for recognition models (the ``8k``/``16k`` in the
        name), the allowed synthesis rates for TTS voices.
    language : str
        ``"chinese"``, ``"english"``, ``"sichuan"``, ``"cantonese"`` or ``"shanghai"``.
    domain : str
        The last name component (``common``, ``general``, ``court``, ...).
    regions : tuple of str
        Regions where the docs restrict it; empty means every SIS region.
    """

    name: str
    interface: Interface
    rates_hz: tuple[int, ...]
    language: str
    domain: str
    regions: tuple[str, ...] = ()

    @property
    def rate_hz(self) -> int:
        """The single sample rate of a recognition property (first of ``rates_hz``)."""
        return self.rates_hz[0]


_CN4: Final = ("cn-north-4",)
_CN4_E3: Final = ("cn-north-4", "cn-east-3")


def _asr(interface: Interface, name: str, regions: tuple[str, ...] = ()) -> PropertyInfo:
    # Recognition names are language_{8k|16k}_domain (sis-protocol.md §4.2).
    language, rate, domain = name.split("_", 2)
    return PropertyInfo(name, interface, (int(rate[:-1]) * 1000,), language, domain, regions)


def _tts(name: str, rates: tuple[int, ...] = (8000, 16000)) -> PropertyInfo:
    # TTS names are language_speaker_domain (§11.5).
    language, _speaker, domain = name.split("_", 2)
    return PropertyInfo(name, Interface.TTS, rates, language, domain)


_R, _S, _T, _F = Interface.RASR, Interface.SHORT_AUDIO, Interface.TRANSCRIBER, Interface.FLASH

_STANDARD_VOICES: Final = (
    "chinese_xiaoqi_common", "chinese_xiaoyu_common", "chinese_xiaoyan_common",
    "chinese_xiaowang_common", "chinese_xiaowen_common", "chinese_xiaojing_common",
    "chinese_xiaosong_common", "chinese_xiaoxia_common", "chinese_xiaodai_common",
    "chinese_xiaoqian_common", "english_cameal_common",
)
_PREMIUM_VOICES: Final = (
    "chinese_huaxiaoxia_common", "chinese_huaxiaogang_common", "chinese_huaxiaolu_common",
    "chinese_huaxiaoshu_common", "chinese_huaxiaowei_common", "chinese_huaxiaoliang_common",
    "chinese_huaxiaodong_common", "chinese_huaxiaoyan_common", "chinese_huaxiaoxuan_common",
    "chinese_huaxiaowen_common", "chinese_huaxiaoyang_common", "chinese_huaxiaomin_common",
    "chinese_huaxiaomei_common", "chinese_huaxiaofei_common", "chinese_huaxiaolong_common",
    "chinese_huaxiaorui_common", "chinese_huaxiaoru_common", "chinese_huaxiaohan_common",
    "chinese_huaxiaoning_common", "chinese_huaxiaozhen_common", "chinese_huaxiaoman_common",
    "chinese_huaxiaofang_common", "chinese_huaxiaojun_common", "english_alvin_common",
    "english_amy_common",
)

#: Every documented property, per interface (sis-protocol.md §4.3, §10, §11.1, §11.3-11.5).
#: The short-audio websocket page (§10, 2021) lists five of the short-audio models; the v3 SDK
#: model (§11.1) lists the superset for the same service, so both forms accept the superset.
PROPERTIES: Final[dict[Interface, dict[str, PropertyInfo]]] = {
    _R: {p.name: p for p in (
        _asr(_R, "chinese_8k_common"),
        _asr(_R, "chinese_16k_common"),
        _asr(_R, "chinese_8k_general", _CN4_E3),
        _asr(_R, "chinese_16k_general"),
        _asr(_R, "sichuan_16k_common", _CN4),
        _asr(_R, "cantonese_16k_common", _CN4),
        _asr(_R, "shanghai_16k_common", _CN4),
        _asr(_R, "chinese_16k_court", _CN4),
        _asr(_R, "chinese_16k_it", _CN4),
        _asr(_R, "english_16k_common"),
    )},
    _S: {p.name: p for p in (
        _asr(_S, "chinese_8k_common"),
        _asr(_S, "chinese_16k_common"),
        _asr(_S, "chinese_16k_general"),
        _asr(_S, "chinese_16k_travel"),
        _asr(_S, "sichuan_16k_common", _CN4),
        _asr(_S, "cantonese_16k_common", _CN4),
        _asr(_S, "shanghai_16k_common", _CN4),
        _asr(_S, "english_8k_common", ("cn-east-3",)),
        _asr(_S, "english_16k_common", ("cn-east-3",)),
    )},
    _T: {p.name: p for p in (
        _asr(_T, "chinese_8k_common"),
        _asr(_T, "chinese_16k_conversation"),
        _asr(_T, "chinese_8k_general"),
        _asr(_T, "chinese_16k_media"),
        _asr(_T, "chinese_8k_bank"),
        _asr(_T, "chinese_8k_insurance"),
        _asr(_T, "sichuan_8k_common"),
    )},
    _F: {p.name: p for p in (
        _asr(_F, "chinese_8k_common"),
        _asr(_F, "chinese_16k_conversation"),
    )},
    Interface.TTS: {p.name: p for p in (
        *(_tts(n) for n in _STANDARD_VOICES),
        *(_tts(n) for n in _PREMIUM_VOICES),
        # The two literature voices synthesise at 16 kHz only (§11.5).
        _tts("chinese_huanvxia_literature", (16000,)),
        _tts("chinese_huaxiaoxuan_literature", (16000,)),
    )},
}


def properties_for(interface: Interface | str) -> dict[str, PropertyInfo]:
    """All properties of one interface, by name.

    Parameters
    ----------
    interface : Interface or str
        ``Interface.RASR`` or its value ``"rasr"``, ...

    Returns
    -------
    dict of str to PropertyInfo

    Raises
    ------
    ValueError
        ``interface`` is not one of :class:`Interface`.
    """
    return PROPERTIES[Interface(interface)]


def lookup_property(interface: Interface | str, name: object) -> PropertyInfo | None:
    """The :class:`PropertyInfo` for ``name`` on ``interface``, or None if it is not accepted there.

    Parameters
    ----------
    interface : Interface or str
    name : object
        Anything (a wire value of any JSON type); non-strings give None.

    Returns
    -------
    PropertyInfo or None
    """
    if not isinstance(name, str):
        return None
    return PROPERTIES[Interface(interface)].get(name)

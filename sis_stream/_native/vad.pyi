"""Type stub for the compiled VAD kernels (native/vad.pyx); the numpy twin is _reference/vad.py."""

from typing import Final

from typing_extensions import Buffer

FEATURE_ENERGY: Final[int]
FEATURE_BAND: Final[int]
FEATURE_ZCR: Final[int]
N_FEATURES: Final[int]
DBFS_FLOOR: Final[float]
MAX_FRAME_LEN: Final[int]
MAX_SECTIONS: Final[int]
DECIMATIONS: Final[tuple[int, ...]]
P_ON_DB: Final[int]
P_OFF_DB: Final[int]
P_MIN_DBFS: Final[int]
P_FALL: Final[int]
P_RISE: Final[int]
P_RISE_MAX_DB: Final[int]
P_HANGOVER: Final[int]
P_ONSET: Final[int]
P_LOOKBACK_DB: Final[int]
P_LOOKBACK_MAX: Final[int]
P_ON_MAX_DB: Final[int]
P_DEV_FACTOR: Final[int]
P_DEV_BETA: Final[int]
P_DEV_INIT: Final[int]
N_PARAMS: Final[int]
S_FLOOR: Final[int]
S_ACTIVE: Final[int]
S_HANG: Final[int]
S_NFRAMES: Final[int]
S_RUN: Final[int]
S_UP: Final[int]
S_DEV: Final[int]
N_STATE: Final[int]
DECISION_SPEECH: Final[int]
DECISION_LOOKBACK_SHIFT: Final[int]
MAX_LOOKBACK: Final[int]
#: "avx512f", "avx2+fma" or "baseline": which build of the frame-parallel loop runs on this CPU.
LANES_ISA: Final[str]

def frame_features(
    x: Buffer, frame_len: int, decim: int, sos: Buffer, zi: Buffer, out: Buffer
) -> int:
    """Features of each complete frame of ``x`` into ``out[:n]``; update ``zi``; return n."""

def band_energy(
    x: Buffer, frame_len: int, decim: int, sos: Buffer, zi: Buffer, out: Buffer
) -> int:
    """Band energy (dBFS) of each complete frame of ``x`` into ``out[:n]``; update ``zi``; return n."""

def energy_decide(band: Buffer, params: Buffer, state: Buffer, out: Buffer) -> int:
    """Decision code for each band energy (dBFS) into ``out`` (uint8); update ``state``; return n."""

def band_decide(
    x: Buffer,
    frame_len: int,
    decim: int,
    sos: Buffer,
    zi: Buffer,
    params: Buffer,
    state: Buffer,
    band: Buffer,
    out: Buffer,
) -> int:
    """band_energy() then energy_decide() in one call (the streaming hot path); return n."""

# Compiled front-ends of EnergyVad.process and Endpointer.process (bound by sis_stream.audio.vad
# and sis_stream.audio.endpoint when this module is the selected backend; every call outside the
# hot case goes to the Python method registered here).
#: Endpointer counters in the order of Endpointer._c (sis_stream.audio.endpoint._COUNTERS).
EP_COUNTERS: Final[tuple[str, ...]]

def _bind_vad_front_end(backend_ns: object, self_module: object, process: object) -> None:
    """Register ``_backend``'s namespace and the Python ``EnergyVad.process`` (called once)."""

def _bind_endpoint_front_end(process: object, segment_audio: object, counters: object) -> None:
    """Register the Python ``Endpointer.process`` and ``SegmentAudio``; check the counters."""

def _vad_process_front(self: object, chunk: object) -> object: ...
def _endpoint_process_front(self: object, chunk: object) -> object: ...

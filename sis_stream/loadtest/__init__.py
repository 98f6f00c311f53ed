"""Load tests of SIS endpoints: many real-time calls at once, latency, accuracy and errors.

The Python face of ``sis-stream loadtest`` (docs/loadtest.md)::

    from sis_stream.server.embedded import embedded_server

    corpus = load_corpus("calls/", prop="english_16k_common")    # or synthetic_corpus()
    spec = CallSpec("continue", {"audio_format": corpus.audio_format.sis_name,
                                 "property": "english_16k_common"})
    target = LoadTarget(engine_overrides=("english_16k_common=none",), server_factory=embedded_server)
    test = LoadTest(target, corpus,
                    LoadTestOptions(spec, duration_s=30, plan=parse_ramp(None, 50, 30)))
    await test.run()
    result = summarize(test)
"""

from __future__ import annotations

from .call import CallHandle, CallSpec, run_call
from .capacity import CapacityOptions, CapacitySearch
from .corpus import Corpus, CorpusItem, load_corpus, speech_spans, synthetic_corpus, wire_format_for
from .metrics import Aggregate, CallResult
from .plan import RampPlan, parse_ramp
from .progress import Progress
from .report import write_report
from .results import summarize, write_json
from .runner import LoadTest, LoadTestOptions
from .target import LoadTarget, TargetRefused, check_target, is_loopback_url

__all__ = [
    "Aggregate",
    "CallHandle",
    "CallResult",
    "CallSpec",
    "CapacityOptions",
    "CapacitySearch",
    "Corpus",
    "CorpusItem",
    "LoadTarget",
    "LoadTest",
    "LoadTestOptions",
    "Progress",
    "RampPlan",
    "TargetRefused",
    "check_target",
    "is_loopback_url",
    "load_corpus",
    "parse_ramp",
    "run_call",
    "speech_spans",
    "summarize",
    "synthetic_corpus",
    "wire_format_for",
    "write_json",
    "write_report",
]

"""End to end with real telephone speech (Asterisk's 8 kHz prompts) through every listener of the
bridge into the embedded server (Whisper tiny.en): the final text arrives on the events stream,
and in-band for mod_audio_fork."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from bridge_peers import FakeAsterisk, FakeFreeSwitch, FakeTwilio
from realspeech import asterisk_prompts
from server_helpers import whisper_registry  # noqa: F401 - session fixture

from sis_stream.bridges import Bridge, CallbackSink, LegOptions
from sis_stream.server.embedded import embedded_server
from sis_stream.text import wer

pytestmark = [pytest.mark.engine, pytest.mark.slow]

#: tiny.en on 8 kHz telephone audio resampled to 16 kHz: a generous bound (0 on these prompts here).
MAX_WER = 0.3


def _prompt(name: str) -> tuple[np.ndarray, str]:
    u = next(u for u in asterisk_prompts() if u.name == name)
    rng = np.random.default_rng(0)
    pad = lambda ms: np.round(rng.normal(0, 10, 8 * ms)).astype(np.int16)
    return np.concatenate([pad(300), u.pcm, pad(1200)]), u.text


def _finals(events: list[dict], call_id: str, channel=0) -> str:
    return " ".join(e["text"] for e in events
                    if e["type"] == "final" and e["call_id"] == call_id and e["channel"] == channel)


async def test_real_speech_through_all_three_listeners(whisper_registry) -> None:  # noqa: F811
    events: list[dict] = []
    a_pcm, a_text = _prompt("agent-pass")
    f_pcm, f_text = _prompt("auth-incorrect")
    t_pcm, t_text = _prompt("agent-newlocation")
    async with embedded_server(registry=whisper_registry) as srv, srv.client() as client, \
            Bridge(client, audiosocket=":0", audio_fork=":0", twilio=":0", sinks=[CallbackSink(events.append)],
                   options=LegOptions(final_timeout_s=60.0, max_buffer_ms=30_000)) as b:
        # the peers send faster than real time: the queue holds the audio until SIS answers START
        ah, ap = b.addresses["audiosocket"]
        fh, fp = b.addresses["audio_fork"]
        th, tp = b.addresses["twilio"]
        asterisk = FakeAsterisk(ah, ap, a_pcm)
        freeswitch = FakeFreeSwitch(f"ws://{fh}:{fp}/8000", {"uuid": "fs-speech"}, f_pcm, seed=1)
        twilio = FakeTwilio(f"ws://{th}:{tp}/", {"inbound": t_pcm}, call_sid="CAspeech")
        _, fs_res, _ = await asyncio.gather(asterisk.run(timeout_s=120), freeswitch.run(timeout_s=120),
                                            twilio.run(timeout_s=120))
        async with asyncio.timeout(60):
            while sum(e["type"] == "call_end" for e in events) < 3:
                await asyncio.sleep(0.05)

    said = {asterisk.call_uuid: a_text, "fs-speech": f_text, "CAspeech": t_text}
    channel = {asterisk.call_uuid: 0, "fs-speech": 0, "CAspeech": "inbound"}
    for cid, text in said.items():
        heard = _finals(events, cid, channel[cid])
        assert wer(text, heard) <= MAX_WER, (cid, text, heard)
        end = next(e for e in events if e["type"] == "call_end" and e["call_id"] == cid)
        assert end["lost_ms"] == 0 and end["reason"] == "hangup" and end["finals"] >= 1
        finals = [e for e in events if e["type"] == "final" and e["call_id"] == cid]
        # call time: inside the call's audio (300 ms of line noise first)
        assert all(0 <= f["start_ms"] <= f["end_ms"] <= end["audio_ms"] + 100 for f in finals)
        assert finals[0]["end_ms"] > 1000
    # in-band for mod_audio_fork: {"type": "transcription", "data": <the SIS RESULT>}
    inband = [m for m in fs_res.messages if m["type"] == "transcription"]
    assert inband and all(m["data"]["resp_type"] == "RESULT" for m in inband)
    text = " ".join(s["result"]["text"] for m in inband for s in m["data"]["segments"] if s["is_final"])
    assert wer(f_text, text) <= MAX_WER, text
    assert text == _finals(events, "fs-speech")

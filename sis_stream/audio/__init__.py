"""The audio core: SIS audio formats and WAV I/O, G.711, the streaming resampler, the energy VAD
and SIS endpoint detection.

Nothing here does I/O beyond reading and writing WAV files, and nothing imports the protocol,
client or server layers. Each kernel (G.711, resampler, VAD) has a compiled Cython version in
``sis_stream._native`` and a pure-numpy twin in ``sis_stream._reference``; ``sis_stream._backend``
picks one at import time. Import from the modules (``sis_stream.audio.codec`` ...) or from the
top-level ``sis_stream`` package.
"""

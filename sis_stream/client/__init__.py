"""The asyncio client: RASR websockets (:mod:`.rasr`), the send pump (:mod:`.framing`,
:mod:`.pacing`, the shared pacing timer :mod:`.scheduler`, the stream runner :mod:`.runner` with
its :mod:`.receive` side and :mod:`.fastpath`, the :mod:`.events` it reports), connecting and its
settings (:mod:`.transport`), the REST clients (:mod:`.rest`) and the blocking wrapper
(:mod:`.sync`).

This package face imports nothing, so that ``sis_stream.client.framing`` and
``sis_stream.client.pacing`` stay usable without loading aiohttp.
"""

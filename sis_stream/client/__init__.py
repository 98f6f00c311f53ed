"""The asyncio client: RASR websockets (:mod:`.rasr`), the send pump (framing, pacing, the
transport's scheduler and stream runner), the REST clients (:mod:`.rest`) and the blocking
wrapper (:mod:`.sync`).

This package face imports nothing, so that ``sis_stream.client.framing`` and
``sis_stream.client.pacing`` stay usable without loading aiohttp.
"""

"""The ``sis-stream`` command line: :func:`sis_stream.cli.main.main` parses the arguments and
dispatches to one module per subcommand (``transcribe``, ``demo``, ``convert``, ``vad``, ``bench``;
``serve`` is in :mod:`.main`). :mod:`.console` and :mod:`.output` render transcripts.
"""

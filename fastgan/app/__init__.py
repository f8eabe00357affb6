"""The command line: ``fastgan train | evaluate | profile`` (``cli``), its runs (``train``, ``evaluate``) and
pictures (``plots``)."""

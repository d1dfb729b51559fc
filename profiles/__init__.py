"""Measured latency look-up tables, one JSON file per device, runtime, thread count and precision.

Each file is written by ``edgekit lut build`` (schema ``edgekit.lut/1``, see
:mod:`edgekit.measure.lut`) and read by name with :func:`edgekit.measure.lut.load_profile`
through ``importlib.resources``. ``edgekit lut list`` shows what each was measured on.
"""

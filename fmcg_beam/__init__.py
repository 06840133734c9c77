"""fmcg-beam: a Philippine FMCG star schema, generated in parallel with Apache Beam.

Run ``python -m fmcg_beam --help`` for the options.
"""

__version__ = "0.8.6"

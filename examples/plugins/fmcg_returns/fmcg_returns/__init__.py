"""fmcg-returns: the ``fact_returns`` custom table for fmcg-beam (returns of delivered sales lines).

Installing this package (``pip install -e examples/plugins/fmcg_returns``) registers the table through the
entry point ``fact_returns = "fmcg_returns:ReturnsGenerator"`` in the group ``fmcg_beam.tables``; every
fmcg-beam run in that environment then knows ``fact_returns``. See ``fmcg_returns.returns`` for the rules.
"""

from fmcg_returns.returns import ReturnsGenerator, refund_units

__all__ = ["ReturnsGenerator", "refund_units"]
__version__ = "0.1.0"

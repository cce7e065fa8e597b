"""Measuring treatments, below every pipeline (sweep, compare, the probe's steer check, serve).

An engine (:mod:`steerlab.engines`) decodes many treatments per batch, one per row, and
teacher-forced scoring stays on the Hugging Face model (:mod:`steerlab.engines.scoring`);
:class:`~.measure.Measurer` turns both into a behaviour's score, fluency and side effects;
:mod:`.norms` gives the scale strengths are measured in; :mod:`.select` the one rule every
choice on a selection split follows.
"""

from ..engines.rows import Generated, continuation_nll_rows, greedy_rows, next_logprobs_rows
from .measure import Measurer, summarize
from .norms import random_units, residual_norms
from .select import choose, rank_key, rule_text

__all__ = [
    "Generated",
    "Measurer",
    "choose",
    "continuation_nll_rows",
    "greedy_rows",
    "next_logprobs_rows",
    "random_units",
    "rank_key",
    "residual_norms",
    "rule_text",
    "summarize",
]

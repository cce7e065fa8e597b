"""Interventions: one abstraction for every treatment of a model.

* functions (context managers on a bare model): :func:`steer`, :func:`ablate`, :func:`clamp`,
  and the permanent :func:`orthogonalize`;
* :class:`Intervention` objects applied to a loaded model, undone on exit: :class:`Steer`,
  :class:`Ablate`, :class:`Clamp`, :class:`SteerRows` (a vector per batch row),
  :class:`Orthogonalize` (in place, restored),
  :class:`PromptPrefix`, :class:`LoRA`, :class:`NoOp`, and :class:`Compose` / :func:`apply`
  for several at once;
* several directions: :func:`ablate`, :class:`Ablate`, :func:`orthogonalize` and
  :class:`Orthogonalize` accept a (K, D) tensor or a list and remove the span
  (:func:`as_basis`); :func:`steer_many` adds several (vector, layers, coeff) terms;
* :class:`PerRow`: a different treatment per batch row (:class:`RowSetting`), so a grid of
  settings shares batched forwards.
"""

from .base import Compose, Intervention, NoOp, apply, vector_spec
from .lora import LoRA
from .per_row import PerRow, RowSetting
from .prompting import PromptPrefix
from .runtime import ablate, as_basis, check_coeff, clamp, steer, steer_rows
from .treatments import Ablate, Clamp, Orthogonalize, Steer, SteerRows, steer_many
from .weights import orthogonalize

__all__ = [
    "Ablate",
    "Clamp",
    "Compose",
    "Intervention",
    "LoRA",
    "NoOp",
    "Orthogonalize",
    "PerRow",
    "PromptPrefix",
    "RowSetting",
    "Steer",
    "SteerRows",
    "ablate",
    "apply",
    "as_basis",
    "check_coeff",
    "clamp",
    "orthogonalize",
    "steer",
    "steer_many",
    "steer_rows",
    "vector_spec",
]

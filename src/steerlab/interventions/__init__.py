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
* :class:`PerRow`: a different treatment per batch row (a list of interventions), so a grid
  of settings shares batched forwards;
* every intervention describes itself as plain data (``ops()``, :mod:`.ops`), which every
  executor reads and :func:`from_ops` turns back into an intervention.
"""

from .base import Compose, Intervention, NoOp, apply, vector_spec
from .lora import LoRA
from .orthogonal import Orthogonalize
from .per_row import PerRow
from .prompting import PromptPrefix
from .rebuild import from_ops
from .runtime import ablate, as_basis, check_coeff, clamp, steer, steer_rows
from .treatments import Ablate, Clamp, Steer, SteerRows, steer_many
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
    "Steer",
    "SteerRows",
    "ablate",
    "apply",
    "as_basis",
    "check_coeff",
    "clamp",
    "from_ops",
    "orthogonalize",
    "steer",
    "steer_many",
    "steer_rows",
    "vector_spec",
]

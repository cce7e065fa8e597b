"""Results that stock engines run: llama.cpp control vectors (:mod:`.gguf`), steering baked
into a plain Hugging Face checkpoint (:mod:`.hf`), and the one checked export path and model
card every checkpoint export uses (:mod:`.checkpoint`, :mod:`.card`)."""

from .checkpoint import ExportCheck, logit_check, prepare_checkpoint, publish_checkpoint
from .gguf import import_control_vector, read_control_vector, write_control_vector

__all__ = [
    "ExportCheck",
    "import_control_vector",
    "logit_check",
    "prepare_checkpoint",
    "publish_checkpoint",
    "read_control_vector",
    "write_control_vector",
]

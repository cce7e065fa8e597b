"""Fixtures: tiny random-init models of each supported architecture, and a tiny tokenizer.

Random weights are enough for structure and identities (milliseconds); behaviour is tested on
a real packaged model in ``test_real_model.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

# Sixteen everyday prompts with no sentiment of their own: a behaviour's eval split in tests.
EVAL_PROMPTS = [
    "Describe a city bus.",
    "Tell me about breakfast.",
    "What is a river?",
    "Describe a kitchen table.",
    "Write about a pencil.",
    "Tell me about a train station.",
    "Describe a parking lot.",
    "What is a spoon?",
    "Describe a bookshelf.",
    "Tell me about a bridge.",
    "Write about a window.",
    "Describe a hallway.",
    "What is a calendar?",
    "Describe a garden hose.",
    "Tell me about a street lamp.",
    "Write about a chair.",
]

VOCAB = 128
D = 32

_COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=D,
    num_hidden_layers=4,
    num_attention_heads=4,
    intermediate_size=64,
    pad_token_id=0,
    bos_token_id=1,
    eos_token_id=2,
)
ARCHS: dict[str, dict] = {
    "llama": dict(num_key_value_heads=2),
    "qwen2": dict(num_key_value_heads=2),
    "mistral": dict(num_key_value_heads=2),
    "phi3": dict(num_key_value_heads=2),
    "qwen3": dict(num_key_value_heads=2, head_dim=8),
    "gemma": dict(num_key_value_heads=2, head_dim=8, tie_word_embeddings=True),
    "gemma2": dict(
        num_key_value_heads=2, head_dim=8, query_pre_attn_scalar=8, tie_word_embeddings=True
    ),
    "gemma3_text": dict(
        num_key_value_heads=2, head_dim=8, query_pre_attn_scalar=8, tie_word_embeddings=True
    ),
    "gpt_neox": dict(),
    "gpt2": dict(n_embd=D, n_layer=4, n_head=4, n_positions=128),
}
# Sandwich-norm architectures (Gemma 2/3): each sublayer's output passes through a norm before
# the residual add, so orthogonalization removes the direction but is not runtime ablation.
SANDWICH = ["gemma2", "gemma3_text"]
# Architectures whose sublayers write straight into the residual: orthogonalization there must
# equal runtime ablation exactly.
NON_SANDWICH = [a for a in ARCHS if a not in SANDWICH]


def make_model(model_type: str, seed: int = 0) -> torch.nn.Module:
    extra = ARCHS[model_type]
    kw = {**_COMMON, **extra}
    if model_type == "gpt2":
        kw = {
            k: v
            for k, v in kw.items()
            if k
            not in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
        }
    cfg = AutoConfig.for_model(model_type, **kw)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    # Random init leaves biases at zero: give them values so bias handling is exercised.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0, 0.1)
    return model.eval()


@pytest.fixture(params=list(ARCHS))
def arch(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def tiny(arch: str) -> torch.nn.Module:
    return make_model(arch)


CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def make_tokenizer(
    chat: bool = True, openers: tuple[str, ...] = ("I", "Sorry", "As")
) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over a fixed vocabulary (unknown words map to [UNK]).

    ``openers`` are capitalised words that open refusals, so the refusal score is measurable.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = [
        "[PAD]",
        "[BOS]",
        "[EOS]",
        "[UNK]",
        "<|user|>",
        "<|assistant|>",
        "<|end|>",
        "<|system|>",
    ]
    words += [
        "i",
        "am",
        "so",
        "happy",
        "sad",
        "today",
        "what",
        "a",
        "day",
        "joyful",
        "miserable",
        "life",
        "is",
        "great",
        "awful",
        "tell",
        "me",
        "about",
        "your",
        "the",
        "of",
        "and",
        "to",
        "in",
        "it",
        "you",
        "that",
        "he",
        "was",
        "for",
        "on",
        "are",
        "with",
        "as",
        "his",
        "they",
        "be",
        "at",
        "one",
        "have",
        "this",
        "from",
        "or",
        "had",
        "by",
        "hot",
        "word",
        "but",
        "some",
        "we",
        "can",
        "out",
        "other",
        "were",
        "all",
        "there",
        "when",
        "up",
        "use",
        "how",
        "said",
        "an",
        "each",
        "she",
        "which",
        "do",
        "their",
        "time",
        "if",
        "will",
        "way",
        "many",
        "then",
        "them",
        "write",
        "would",
        "like",
        "so",
        "these",
        "her",
        "long",
        "make",
        "thing",
        "see",
        "him",
        "two",
        "has",
        "look",
        "more",
        "go",
    ]
    words += list(openers)
    vocab = {w: i for i, w in enumerate(dict.fromkeys(words))}
    assert len(vocab) <= VOCAB
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(words[:8])  # matched whole, before pre-tokenization
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]",
        bos_token="[BOS]",
        eos_token="[EOS]",
        unk_token="[UNK]",
    )
    if chat:
        fast.chat_template = CHAT_TEMPLATE
    return fast


@pytest.fixture
def tokenizer() -> PreTrainedTokenizerFast:
    return make_tokenizer()


@pytest.fixture
def tiny_dir(tmp_path: Path) -> Path:
    """A tiny llama + tokenizer saved as a local model directory (for CLI tests)."""
    out = tmp_path / "tiny-llama"
    make_model("llama").save_pretrained(out)
    make_tokenizer().save_pretrained(out)
    return out


def all_hooks(model: torch.nn.Module) -> int:
    n = 0
    for m in model.modules():
        n += len(m._forward_hooks) + len(m._forward_pre_hooks)
        n += len(getattr(m, "_forward_hooks_with_kwargs", {}))
    return n


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_identical(model: torch.nn.Module, snap: dict[str, torch.Tensor]) -> None:
    now = model.state_dict()
    assert now.keys() == snap.keys()
    for k, v in snap.items():
        assert torch.equal(now[k], v), f"parameter {k} changed"


# A refusal run small enough for a tiny random model: seconds, every step exercised.
TINY_REFUSAL = dict(
    model="tiny",
    n_train=16,
    n_val=8,
    n_eval=8,
    keep=2,
    early_prompts=4,
    max_new_tokens=3,
    filter_train=False,
    positions=2,
)

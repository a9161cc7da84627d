"""RouteLLM's ``causal_llm`` router: a causal LM that rates a prompt with a label token.

The model reads a rating prompt (a system message and a classifier message around
the user's question) and answers with one of five label tokens ``[[1]]``..``[[5]]``:
how well the *weak* model is expected to answer (5: very well). The router reads
the next-token probabilities of the five tokens, softmaxed among themselves;
``P(weak is good) = P(label >= score_threshold)`` and the strong model's win rate
is ``1 - P(weak is good)``, with RouteLLM's ``score_threshold`` of 4
(``routellm/routers/causal_llm/model.py``, ``routers.py``). RouteLLM generates
the assistant header and then the label; here the header is part of the prompt
and one forward pass gives the same distribution.

A saved router is a Hugging Face causal-LM directory (``config.json`` with this
package's keys added, ``model.safetensors``, tokenizer files with the label tokens
added) plus the two prompt texts, ``system_message.txt`` and
``classifier_message.txt``. RouteLLM's published layout (its prompt files
``system_ft_v5.txt`` and ``classifier_ft_v5.txt``, a Llama-3 model whose
tokenizer may come from elsewhere: pass ``tokenizer=``) loads from a local path
with :meth:`CausalLLMRouter.from_pretrained`. Any causal LM directory with a chat
template works; one without uses RouteLLM's Llama-3 prompt format. Needs the
``finetune`` extra.

    >>> from shared_core.routers.causal_llm import LABEL_TOKENS, weak_good_probability
    >>> LABEL_TOKENS
    ('[[1]]', '[[2]]', '[[3]]', '[[4]]', '[[5]]')
    >>> round(float(weak_good_probability([[0.0, 0.0, 0.0, 0.0, 0.0]], 4)[0]), 3)
    0.4
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from shared_core.errors import ArtifactError, ConfigError
from shared_core.routers import Router, register_router
from shared_core.routers._finetuned import (
    check_positive,
    check_threads,
    open_model_dir,
    router_fields,
    save_dir,
    softmax,
    torch_threads,
    write_router_fields,
)

LABEL_TOKENS = ("[[1]]", "[[2]]", "[[3]]", "[[4]]", "[[5]]")
#: RouteLLM's default: a rating of 4 or 5 means the weak model will do well.
SCORE_THRESHOLD = 4
SYSTEM_FILE = "system_message.txt"
CLASSIFIER_FILE = "classifier_message.txt"
#: RouteLLM's prompt files, tried when a directory has none of ours.
ROUTELLM_PROMPT_FILES = (("system_ft_v5.txt", "classifier_ft_v5.txt"), ("system_ft_v4.txt", "classifier_ft_v4.txt"))
#: RouteLLM's Llama-3 prompt format (``PROMPT_FORMAT_CONFIGS`` in its ``configs.py``), for
#: checkpoints whose tokenizer has no chat template; the assistant header ends the prompt.
LLAMA3_FORMAT = {
    "bos": "<|begin_of_text|>",
    "system": "<|start_header_id|>system<|end_header_id|>\n\n{text}<|eot_id|>",
    "user": "<|start_header_id|>user<|end_header_id|>\n\n{text}<|eot_id|>",
    "assistant": "<|start_header_id|>assistant<|end_header_id|>\n\n",
}


def weak_good_probability(label_logits: Any, score_threshold: int = SCORE_THRESHOLD) -> np.ndarray:
    """``P(label >= score_threshold)`` from the label tokens' logits, shape ``(n, 5)``."""
    probs = softmax(np.asarray(label_logits, dtype=np.float64))
    return probs[:, score_threshold - 1 :].sum(axis=1)


def check_messages(system_message: Any, classifier_message: Any) -> None:
    if not isinstance(system_message, str) or not system_message.strip():
        raise ConfigError(f"system_message must be a non-empty string, got {system_message!r}")
    if not isinstance(classifier_message, str) or "{question}" not in classifier_message:
        raise ConfigError(
            f"classifier_message must be a string with a '{{question}}' placeholder, got {classifier_message!r}"
        )


@register_router
class CausalLLMRouter(Router):
    """A causal LM answering a rating prompt with ``[[1]]``..``[[5]]``; score = 1 - P(rating >= 4).

    ``model`` and ``tokenizer`` are a ``transformers`` causal LM and its tokenizer
    with the label tokens in its vocabulary. ``system_message`` and
    ``classifier_message`` (with a ``{question}`` placeholder) make the rating
    prompt; the question is cut to ``max_question_tokens`` tokens. ``prompt_format``
    is ``"chat_template"`` (the tokenizer's) or ``"llama3"`` (RouteLLM's format).
    """

    name = "causal_llm"

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        system_message: str,
        classifier_message: str,
        score_threshold: int = SCORE_THRESHOLD,
        label_tokens: Sequence[str] = LABEL_TOKENS,
        prompt_format: str = "chat_template",
        max_question_tokens: int = 512,
        batch_size: int = 8,
        threads: int | None = None,
    ) -> None:
        check_messages(system_message, classifier_message)
        labels = tuple(label_tokens)
        if len(labels) < 2 or not all(isinstance(t, str) and t for t in labels):
            raise ConfigError(f"label_tokens must be at least two non-empty strings, got {label_tokens!r}")
        if isinstance(score_threshold, bool) or not isinstance(score_threshold, int) or not 1 <= score_threshold <= len(labels):
            raise ConfigError(f"score_threshold must be an integer from 1 to {len(labels)}, got {score_threshold!r}")
        if prompt_format not in ("chat_template", "llama3"):
            raise ConfigError(f"prompt_format must be 'chat_template' or 'llama3', got {prompt_format!r}")
        check_positive(max_question_tokens, "max_question_tokens")
        check_positive(batch_size, "batch_size")
        self.model = model
        self.tokenizer = tokenizer
        self.system_message = system_message
        self.classifier_message = classifier_message
        self.score_threshold = score_threshold
        self.label_tokens = labels
        self.prompt_format = prompt_format
        self.max_question_tokens = max_question_tokens
        self.batch_size = batch_size
        self.threads = check_threads(threads)

    # Prompts ------------------------------------------------------------------
    def label_token_ids(self) -> list[int]:
        """Vocabulary ids of the label tokens; each must be one token the model has a row for."""
        ids = []
        for token in self.label_tokens:
            tid = self.tokenizer.convert_tokens_to_ids(token)
            if tid is None or tid == self.tokenizer.unk_token_id:
                raise ArtifactError(f"label token {token!r} is not in the tokenizer's vocabulary")
            ids.append(int(tid))
        rows = self.model.get_output_embeddings().weight.shape[0]
        if max(ids) >= rows:
            raise ArtifactError(f"label token id {max(ids)} is beyond the model's {rows} output rows")
        return ids

    def rating_text(self, prompt: str) -> str:
        """The text the model reads for ``prompt``, ending where the label token comes."""
        ids = self.tokenizer.encode(prompt.strip(), add_special_tokens=False)
        if len(ids) > self.max_question_tokens:
            prompt = self.tokenizer.decode(ids[: self.max_question_tokens])
        user = self.classifier_message.format(question=prompt.strip())
        if self.prompt_format == "llama3":
            f = LLAMA3_FORMAT
            return (f["bos"] + f["system"].format(text=self.system_message.strip())
                    + f["user"].format(text=user.strip()) + f["assistant"])
        messages = [{"role": "system", "content": self.system_message.strip()},
                    {"role": "user", "content": user.strip()}]
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def encode(self, prompts: Sequence[str]):
        """Left-padded tensors of the rating texts (the label is predicted at the last position)."""
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        texts = [self.rating_text(p) for p in prompts]
        # the templates hold their own special tokens (BOS included)
        return self.tokenizer(texts, padding=True, add_special_tokens=False, return_tensors="pt")

    def last_logits(self, batch) -> Any:
        """Next-token logits at the last position, shape ``(batch, vocab)``."""
        try:
            out = self.model(**batch, logits_to_keep=1)
        except TypeError:  # older transformers
            out = self.model(**batch)
        return out.logits[:, -1, :]

    def label_logits(self, prompts: Sequence[str]) -> np.ndarray:
        """Logits of the label tokens, shape ``(len(prompts), len(label_tokens))``."""
        import torch

        ids = self.label_token_ids()
        out = []
        with torch_threads(self.threads), torch.inference_mode():
            for start in range(0, len(prompts), self.batch_size):
                batch = self.encode(list(prompts[start : start + self.batch_size]))
                out.append(self.last_logits(batch)[:, ids].float().numpy())
        return np.concatenate(out, axis=0)

    def _score(self, prompts: list[str]) -> np.ndarray:
        return 1.0 - weak_good_probability(self.label_logits(prompts), self.score_threshold)

    # Artifacts ----------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        tokenizer: str | Path | None = None,
        score_threshold: int | None = None,
        batch_size: int = 8,
        threads: int | None = None,
        **kwargs: Any,
    ) -> "CausalLLMRouter":
        """Load a saved causal_llm router, or a RouteLLM causal_llm checkpoint from a local path.

        ``tokenizer`` is a directory to take the tokenizer from when the checkpoint
        has none (RouteLLM's took Llama-3's); missing label tokens are then appended
        to it, as RouteLLM did. ``score_threshold`` overrides the saved one.
        """
        directory, config, fields = open_model_dir(path, cls.name, kwargs)
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        settings = config.get("routellm") if isinstance(config.get("routellm"), dict) else {}
        system, classifier = _read_prompts(directory, settings)
        labels = tuple(settings.get("label_tokens") or LABEL_TOKENS)
        source = Path(tokenizer) if tokenizer is not None else directory
        try:
            tok = AutoTokenizer.from_pretrained(str(source))
        except (OSError, ValueError) as exc:
            raise ArtifactError(
                f"cannot load a tokenizer from {str(source)!r} ({exc}); a RouteLLM checkpoint without tokenizer "
                "files needs tokenizer=<its base model's directory>"
            ) from None
        missing = [t for t in labels if t not in tok.get_vocab()]
        if missing:
            tok.add_tokens(list(missing), special_tokens=True)
        try:
            model = AutoModelForCausalLM.from_pretrained(str(directory), dtype=torch.float32, use_safetensors=True)
        except (OSError, ValueError, KeyError) as exc:
            raise ArtifactError(f"cannot load the causal LM in {str(directory)!r}: {exc}") from None
        model.eval()
        fmt = settings.get("prompt_format") or ("chat_template" if getattr(tok, "chat_template", None) else "llama3")
        if fmt == "llama3" and "<|start_header_id|>" not in tok.get_vocab():
            raise ArtifactError(
                f"{str(directory)!r}: the tokenizer has no chat template and is not Llama-3's; "
                "cannot build the rating prompt"
            )
        router = cls(
            model, tok, system_message=system, classifier_message=classifier,
            score_threshold=score_threshold or int(settings.get("score_threshold", SCORE_THRESHOLD)),
            label_tokens=labels, prompt_format=fmt,
            max_question_tokens=int(settings.get("max_question_tokens", 512)), batch_size=batch_size, threads=threads,
        )
        router.label_token_ids()  # fail at load, not at the first prompt
        for key, value in fields.items():
            setattr(router, key, value)
        return router

    def save(self, path: str | Path, *, dtype: str = "bfloat16") -> Path:
        """A Hugging Face directory (weights in ``dtype``, tokenizer) plus the two prompt files."""
        import torch

        if dtype not in ("bfloat16", "float16", "float32"):
            raise ConfigError(f"dtype must be bfloat16, float16 or float32, got {dtype!r}")
        directory = save_dir(path)
        original = next(self.model.parameters()).dtype
        self.model.to(getattr(torch, dtype))
        try:
            self.model.save_pretrained(str(directory), safe_serialization=True)
        finally:
            self.model.to(original)
        self.tokenizer.save_pretrained(str(directory))
        (directory / SYSTEM_FILE).write_text(self.system_message, encoding="utf-8")
        (directory / CLASSIFIER_FILE).write_text(self.classifier_message, encoding="utf-8")
        write_router_fields(directory, {
            **router_fields(self),
            "routellm": {
                "label_tokens": list(self.label_tokens),
                "score_threshold": self.score_threshold,
                "prompt_format": self.prompt_format,
                "max_question_tokens": self.max_question_tokens,
                "system_message_file": SYSTEM_FILE,
                "classifier_message_file": CLASSIFIER_FILE,
            },
        })
        return directory


def _read_prompts(directory: Path, settings: dict[str, Any]) -> tuple[str, str]:
    candidates = [(settings.get("system_message_file"), settings.get("classifier_message_file"))]
    candidates += [(SYSTEM_FILE, CLASSIFIER_FILE), *ROUTELLM_PROMPT_FILES]
    for system_name, classifier_name in candidates:
        if not system_name or not classifier_name:
            continue
        system_file, classifier_file = directory / system_name, directory / classifier_name
        if system_file.is_file() and classifier_file.is_file():
            system = system_file.read_text(encoding="utf-8")
            classifier = classifier_file.read_text(encoding="utf-8")
            try:
                check_messages(system, classifier)
            except ConfigError as exc:
                raise ArtifactError(f"{str(directory)!r}: {exc}") from None
            return system, classifier
    names = ", ".join(f"{s} + {c}" for s, c in [(SYSTEM_FILE, CLASSIFIER_FILE), *ROUTELLM_PROMPT_FILES])
    raise ArtifactError(f"{str(directory)!r} has no rating prompt files (expected {names})")

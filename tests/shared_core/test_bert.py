"""The bert router: RouteLLM's 3-label battle classifier, on tiny synthetic checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from shared_core.errors import ArtifactError, ConfigError, DataError  # noqa: E402
from shared_core.routers import get_router_class, load_router  # noqa: E402
from shared_core.routers.bert import BertRouter, win_rate  # noqa: E402

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list("abcdefghijklmnopqrstuvwxyz0123456789?.,!") + [
    "##" + c for c in "abcdefghijklmnopqrstuvwxyz0123456789"] + [
    "what", "is", "the", "prove", "write", "hi", "poem", "math", "capital", "of"]


def wordpiece_tokenizer(vocab):
    """A BERT-style tokenizer over ``vocab``, built with ``tokenizers`` (as transformers 4 and 5 both read it)."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece
    from transformers import PreTrainedTokenizerFast

    ids = {tok: i for i, tok in enumerate(vocab)}
    tok = Tokenizer(WordPiece(ids, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", model_max_length=64)


def tiny_bert_dir(path: Path, seed: int = 0) -> Path:
    """A RouteLLM-layout bert checkpoint: a Hugging Face BertForSequenceClassification directory."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    path.mkdir(parents=True, exist_ok=True)
    tokenizer = wordpiece_tokenizer(VOCAB)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(VOCAB), hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64, num_labels=3)
    model = BertForSequenceClassification(config)
    model.save_pretrained(str(path), safe_serialization=True)
    tokenizer.save_pretrained(str(path))
    return path


def test_win_rate_is_one_minus_tie_and_weak():
    logits = np.log(np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]]))
    assert win_rate(logits) == pytest.approx([0.7, 0.1], abs=1e-9)


def test_registry_has_bert():
    assert get_router_class("bert") is BertRouter


def test_routellm_layout_checkpoint_loads_and_scores(tmp_path):
    import torch

    directory = tiny_bert_dir(tmp_path / "bert_gpt4_augmented")
    config = json.loads((directory / "config.json").read_text())
    assert "router" not in config and config["architectures"] == ["BertForSequenceClassification"]
    router = load_router(directory)
    assert isinstance(router, BertRouter)
    prompts = ["what is the capital of france?", "prove math", "hi"]
    scores = router.score(prompts)
    # the same numbers as transformers computes by hand: softmax, then 1 - P(label 1) - P(label 2)
    enc = router.tokenizer(prompts, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        probs = torch.softmax(router.model(**enc).logits, dim=-1).numpy()
    assert scores == pytest.approx(1 - probs[:, 1] - probs[:, 2], abs=1e-6)
    # batch-first: a prompt scores the same alone as in a batch
    assert router.score(["hi"])[0] == pytest.approx(scores[2], abs=1e-6)
    decisions = router.route(prompts, threshold=float(np.median(scores)))
    assert [d.is_strong for d in decisions] == [bool(s >= np.median(scores)) for s in scores]


def test_save_round_trip_adds_router_keys(tmp_path):
    router = BertRouter.from_pretrained(tiny_bert_dir(tmp_path / "src"))
    router.training_ = {"data": "synthetic"}
    router.scoring_pair_ = {"strong": "s", "weak": "w"}
    out = router.save(tmp_path / "saved")
    config = json.loads((out / "config.json").read_text())
    assert config["router"] == "bert" and config["training"] == {"data": "synthetic"}
    assert (out / "model.safetensors").is_file()
    assert not list(out.glob("*.bin")) and not list(out.glob("*.pkl"))
    assert config["routellm"] == {"max_length": router.max_length}
    again = load_router(out)
    assert again.max_length == router.max_length
    prompts = ["what is 2?", "write a poem"]
    assert again.score(prompts) == pytest.approx(router.score(prompts), abs=1e-6)
    assert again.training_ == {"data": "synthetic"} and again.scoring_pair_ == {"strong": "s", "weak": "w"}
    # the saved directory is still a plain Hugging Face model
    from transformers import AutoModelForSequenceClassification

    assert AutoModelForSequenceClassification.from_pretrained(str(out)).config.num_labels == 3


def test_pickled_weights_are_refused(tmp_path):
    directory = tiny_bert_dir(tmp_path / "b")
    (directory / "model.safetensors").rename(directory / "pytorch_model.bin")
    with pytest.raises(ArtifactError, match="safetensors"):
        load_router(directory)


def test_wrong_label_count_is_refused(tmp_path):
    directory = tiny_bert_dir(tmp_path / "b")
    config = json.loads((directory / "config.json").read_text())
    config["id2label"] = {"0": "a", "1": "b"}
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match="needs 3"):
        load_router(directory)


def test_options_it_does_not_take_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="no option"):
        BertRouter.from_pretrained(tiny_bert_dir(tmp_path / "b"), embedder=object())


def test_fit_learns_a_separable_signal(tmp_path):
    """Prompts with 'math' are strong wins, with 'poem' weak wins: the fitted scores order them."""
    import pandas as pd

    from shared_core.training.bert import fit_bert

    base = tiny_bert_dir(tmp_path / "base")
    rows = []
    for i in range(60):
        rows.append({"prompt": f"prove math {i}", "model_a": "s", "model_b": "w", "winner": "model_a"})
        rows.append({"prompt": f"write poem {i}", "model_a": "w", "model_b": "s", "winner": "model_a"})
        rows.append({"prompt": f"hi {i}", "model_a": "s", "model_b": "other", "winner": "model_b"})  # not the pair
    router = fit_bert(pd.DataFrame(rows), base_model=base, strong="s", weak="w", epochs=6, batch_size=8, lr=3e-3,
                      eval_every=10, patience=20, progress=False, threads=1)
    info = router.training_
    assert info["battles"] == 120 and info["labels"] == {"strong_wins": 60, "tie": 0, "weak_wins": 60}
    assert info["held_out_loss"] < info["held_out_loss_before"]
    math_scores = router.score([f"prove math {i}" for i in range(100, 105)])
    poem_scores = router.score([f"write poem {i}" for i in range(100, 105)])
    assert math_scores.min() > poem_scores.max()
    out = router.save(tmp_path / "fitted")
    assert router.max_length == 128 and load_router(out).max_length == 128  # scored as trained
    assert load_router(out).score(["prove math 1"]) == pytest.approx(router.score(["prove math 1"]), abs=1e-6)


def test_fit_without_pair_battles_names_the_models(tmp_path):
    import pandas as pd

    from shared_core.training.bert import fit_bert

    df = pd.DataFrame([{"prompt": "q", "model_a": "x", "model_b": "y", "winner": "tie"}])
    with pytest.raises(DataError, match="no battle between strong model 's'"):
        fit_bert(df, base_model=tiny_bert_dir(tmp_path / "b"), strong="s", weak="w", progress=False)


def test_partial_fine_tuning_freezes_lower_layers(tmp_path):
    from transformers import AutoModelForSequenceClassification

    from shared_core.training._finetune import freeze_below

    model = AutoModelForSequenceClassification.from_pretrained(str(tiny_bert_dir(tmp_path / "b")))
    assert freeze_below(model, 1) == 2
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any(".layer.1." in n for n in trained) and not any(".layer.0." in n for n in trained)
    assert not any("embeddings" in n for n in trained) and any(n.startswith("classifier") for n in trained)


@pytest.mark.slow
def test_trained_bert_router_from_the_cache_routes(tmp_path):
    """The router `routellm train bert --recipe` puts in the cache, if it is there."""
    from shared_core.cache import trained_router_dir

    directory = trained_router_dir("bert")
    if not (directory / "config.json").is_file():
        pytest.skip(f"no trained bert router in {directory} (routellm train bert --recipe -o {directory})")
    router = load_router(directory)
    assert router.training_["battles"] > 1000 and "MMLU train half" in router.training_["data"]
    scores = router.score(["What is 2 + 2?", "Write a proof that there are infinitely many primes."])
    assert scores.shape == (2,) and np.all((scores >= 0) & (scores <= 1))


@pytest.mark.slow
def test_documented_training_command_then_route(tmp_path, monkeypatch, capsys):
    """The README's command, for real: `routellm train bert --recipe -o <cache>/routers/bert`, then `--router bert`."""
    from shared_core import datasets
    from shared_core.cache import trained_router_dir
    from shared_core.cli import main

    try:
        datasets.default_data_dir()
    except datasets.DataError:
        pytest.skip("router data directory not found")
    monkeypatch.setenv("ROUTELLM_CACHE_DIR", str(tmp_path / "cache"))
    directory = trained_router_dir("bert")
    assert main(["train", "bert", "--recipe", "-o", str(directory), "--no-progress"]) == 0
    router = load_router(directory)
    assert router.training_["battles"] > 1000 and "MMLU train half" in router.training_["data"]
    capsys.readouterr()
    assert main(["route", "--router", "bert", "--threshold", "0.5", "Prove that sqrt(2) is irrational."]) == 0
    assert "router=bert" in capsys.readouterr().out


def test_registry_name_finds_the_router_trained_into_the_cache(tmp_path, monkeypatch, capsys):
    """`routellm route --router bert` after `routellm train bert --recipe -o <cache>/routers/bert`."""
    from shared_core.cli import main
    from shared_core.cache import trained_router_dir
    from shared_core.engine import resolve_router

    monkeypatch.setenv("ROUTELLM_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(ConfigError, match=r"routellm train bert --recipe -o .*routers/bert"):
        resolve_router("bert")
    directory = trained_router_dir("bert")
    assert directory == tmp_path / "cache" / "routers" / "bert"
    BertRouter.from_pretrained(tiny_bert_dir(tmp_path / "src")).save(directory)
    router = resolve_router("bert")
    assert isinstance(router, BertRouter)
    assert resolve_router("bert") is router  # loaded once per process
    assert main(["route", "--router", "bert", "--threshold", "0.5", "what is 2?"]) == 0
    assert "router=bert" in capsys.readouterr().out

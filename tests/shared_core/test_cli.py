"""The route and calibrate commands, through the installed entry point."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from shared_core.cli import main, read_prompts


def run_cli(*args):
    exe = shutil.which("routellm")
    cmd = [exe, *args] if exe else [sys.executable, "-m", "shared_core.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_route_entry_point_json():
    proc = run_cli("route", "What is the capital of France?", "--router", "random", "--threshold", "0.5", "--json")
    assert proc.returncode == 0, proc.stderr
    row = json.loads(proc.stdout)
    assert row["router"] == "random" and row["threshold"] == 0.5
    assert row["role"] == ("strong" if row["score"] >= 0.5 else "weak")


def test_route_file_and_strong_share(tmp_path):
    f = tmp_path / "prompts.txt"
    f.write_text("one\ntwo\nthree\n")
    proc = run_cli("route", "--file", str(f), "--router", "router-random-0.0")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("strong ") == 3 and "strong: 3/3" in proc.stdout


def test_route_bad_arguments_name_the_value():
    proc = run_cli("route", "x", "--router", "nope", "--threshold", "0.5")
    assert proc.returncode == 2 and "unknown router 'nope'" in proc.stderr
    proc = run_cli("route", "x", "--router", "random", "--threshold", "1.7")
    assert proc.returncode == 2 and "1.7" in proc.stderr
    proc = run_cli("route", "--router", "random", "--threshold", "0.5")
    assert proc.returncode == 2 and "either one prompt or --file" in proc.stderr


def test_calibrate_entry_point_on_prompt_file(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text("\n".join(json.dumps({"prompt": f"prompt {i}"}) for i in range(20)))
    proc = run_cli("calibrate", "--router", "random", "--strong-fraction", "0.25", "--prompts-file", str(f), "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["achieved_fraction"] == pytest.approx(0.25)
    assert out["n_prompts"] == 20


def test_calibrate_without_reference_quantiles_says_what_to_do(capsys):
    assert main(["calibrate", "--router", "random", "--strong-fraction", "0.3"]) == 2
    assert "--prompts-file" in capsys.readouterr().err


def test_read_prompts_formats_and_errors(tmp_path):
    csv_file = tmp_path / "p.csv"
    csv_file.write_text("id,question\n1,Why?\n2,How?\n")
    assert read_prompts(csv_file) == ["Why?", "How?"]
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="expected one named"):
        read_prompts(bad)
    with pytest.raises(ValueError, match="does not exist"):
        read_prompts(tmp_path / "missing.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    with pytest.raises(ValueError, match="no prompts"):
        read_prompts(empty)


def test_route_empty_prompt_follows_the_wrappers_policy(capsys):
    """An empty or blank prompt has no text: it goes to on_no_text (strong by default)
    without a score, with the reason recorded, as the wrappers send it."""
    assert main(["route", "", "--router", "random", "--threshold", "0.0", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row == {"prompt": "", "role": "strong", "score": None, "threshold": 0.0, "router": "random",
                   "reason": "no_text"}
    assert main(["route", "  ", "--router", "random", "--threshold", "0.0", "--on-no-text", "weak"]) == 0
    assert capsys.readouterr().out.startswith("weak    (no_text)  threshold=0.0000")


def test_route_and_calibrate_strong_fraction_ends(capsys):
    prompts = ["a", "b", "c", "d"]
    for fraction, role in (("0", "weak"), ("1", "strong")):
        for prompt in prompts:
            assert main(["route", prompt, "--router", "random", "--strong-fraction", fraction, "--json"]) == 0
            assert json.loads(capsys.readouterr().out)["role"] == role
    assert main(["calibrate", "--router", "random", "--strong-fraction", "0"]) == 0
    out = capsys.readouterr().out
    assert "threshold=never" in out and "--strong-fraction 0" in out
    assert main(["calibrate", "--router", "random", "--strong-fraction", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["threshold"] == 0.0


def test_calibrate_on_prompts_fraction_zero_is_never(tmp_path, capsys):
    f = tmp_path / "p.txt"
    f.write_text("\n".join(f"prompt {i}" for i in range(5)))
    assert main(["calibrate", "--router", "random", "--strong-fraction", "0", "--prompts-file", str(f), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["threshold"] > 1.0 and out["achieved_fraction"] == 0.0 and out["n_prompts"] == 5


def test_file_arguments_naming_a_directory_say_so(tmp_path, capsys):
    cases = [
        ["route", "--file", str(tmp_path), "--router", "random", "--threshold", "0.5"],
        ["calibrate", "--router", "random", "--strong-fraction", "0.5", "--prompts-file", str(tmp_path)],
        ["train", "mf", "--data", str(tmp_path), "--output", str(tmp_path / "out"), "--embedder", "hash"],
        ["train", "mf", "--recipe", "--reference-prompts", str(tmp_path), "--output", str(tmp_path / "out")],
        ["evaluate", "--benchmark", str(tmp_path / "dir.csv"), "--out", str(tmp_path / "results"), "--no-plot"],
    ]
    (tmp_path / "dir.csv").mkdir()
    for argv in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "is a directory, not a file" in err and "does not exist" not in err, (argv, err)


def test_importing_the_cli_sets_no_environment_variables():
    """Nothing sets environment variables at import (it used to set OPENBLAS_NUM_THREADS)."""
    code = (
        "import os, json; before = dict(os.environ); import shared_core.cli; shared_core.cli.build_parser(); "
        "print(json.dumps(sorted(set(os.environ.items()) ^ set(before.items()))))"
    )
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []

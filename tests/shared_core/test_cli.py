"""The route and calibrate commands, through the installed entry point."""

import json
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

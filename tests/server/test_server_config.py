"""Server settings: flags > environment > config file, and the checks on them."""

from __future__ import annotations

import json

import pytest

from shared_core.errors import ConfigError
from shared_core.server.config import load_config

BASE = {"strong_base_url": "http://127.0.0.1:9001/v1", "strong_model": "big",
        "weak_base_url": "http://127.0.0.1:9002/v1/", "weak_model": "small"}


def write(tmp_path, data, name="serve.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data) if name.endswith(".json") else data)
    return path


def test_flags_win_over_env_which_wins_over_the_file(tmp_path):
    path = write(tmp_path, {**BASE, "port": 7000, "model_name": "from-file", "max_messages": 5})
    env = {"ROUTELLM_SERVE_PORT": "7100", "ROUTELLM_SERVE_MODEL_NAME": "from-env"}
    config = load_config({"port": 7200, "strong_model": None}, env=env, config_file=path)
    assert config.port == 7200  # flag
    assert config.model_name == "from-env"  # env over file
    assert config.max_messages == 5 and config.strong_model == "big"  # file; an unset flag changes nothing
    assert config.weak_base_url == "http://127.0.0.1:9002/v1"


def test_toml_file_and_env_config_path(tmp_path):
    path = write(tmp_path, 'strong_base_url = "http://127.0.0.1:1/v1"\nstrong_model = "s"\n'
                           'weak_base_url = "http://127.0.0.1:2/v1"\nweak_model = "w"\nthreshold = 0.3\n'
                           'aliases = { cheap = "router-mf-0.9" }\n', name="serve.toml")
    config = load_config({}, env={"ROUTELLM_SERVE_CONFIG": str(path)})
    assert config.threshold == 0.3 and config.aliases == {"cheap": "router-mf-0.9"}


def test_threshold_and_strong_fraction_are_one_choice(tmp_path):
    path = write(tmp_path, {**BASE, "threshold": 0.2})
    config = load_config({"strong_fraction": 0.4}, env={}, config_file=path)
    assert (config.threshold, config.strong_fraction) == (None, 0.4)
    with pytest.raises(ConfigError, match="either threshold"):
        load_config({**BASE, "threshold": 0.1, "strong_fraction": 0.4}, env={})


def test_keys_come_from_the_environment_only(tmp_path):
    config = load_config(BASE, env={"ROUTELLM_STRONG_API_KEY": "sk-s", "ROUTELLM_WEAK_API_KEY": "sk-w"})
    assert (config.api_key("strong"), config.api_key("weak")) == ("sk-s", "sk-w")
    assert "sk-s" not in repr(config) and "sk-s" not in config.model_dump_json()
    path = write(tmp_path, {**BASE, "strong_api_key": "sk-file"})
    with pytest.raises(ConfigError, match="ROUTELLM_STRONG_API_KEY"):
        load_config({}, env={}, config_file=path)


def test_non_loopback_host_needs_tokens():
    with pytest.raises(ConfigError, match="'0.0.0.0' is not a loopback address"):
        load_config({**BASE, "host": "0.0.0.0"}, env={})
    config = load_config({**BASE, "host": "0.0.0.0"}, env={"ROUTELLM_SERVE_AUTH_TOKENS": "t1,t2"})
    assert [t.get_secret_value() for t in config.auth_tokens] == ["t1", "t2"]
    assert "t1" not in repr(config)


@pytest.mark.parametrize("flags, needle", [
    ({"strong_model": None}, "missing setting(s) strong_model: give --strong-model, $ROUTELLM_STRONG_MODEL"),
    ({"weak_base_url": "127.0.0.1:9002"}, "weak_base_url: Value error, must be an http:// or https:// URL"),
    ({"port": 70000}, "port: Input should be less than or equal to 65535"),
    ({"aliases": {"cheap": "mf"}}, "alias 'cheap' must map to a RouteLLM model string"),
    ({"aliases": {"routellm": "router-mf-0.2"}}, "also the model_name"),
    ({"router": "router-mf-0.2", "threshold": 0.3}, "already carries a threshold"),
    ({"upstream_timeout": 0}, "upstream_timeout: Input should be greater than 0"),
    ({"bogus": 1}, "bogus: Extra inputs are not permitted"),
])
def test_bad_settings_name_the_problem(flags, needle):
    settings = {**BASE, **flags}
    settings = {k: v for k, v in settings.items() if v is not None}
    with pytest.raises(ConfigError) as info:
        load_config(settings, env={})
    assert needle in str(info.value)


@pytest.mark.parametrize("content, needle", [("{", "not valid JSON"), ("[1]", "must hold an object")])
def test_bad_config_file(tmp_path, content, needle):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=needle):
        load_config({}, env={}, config_file=path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config({}, env={}, config_file=tmp_path / "missing.json")

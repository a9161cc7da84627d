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


def test_how_each_upstream_serves_the_responses_api_comes_from_a_flag_the_environment_or_the_file(tmp_path):
    path = tmp_path / "serve.toml"
    path.write_text('strong_responses = "chat"\n')
    config = load_config(BASE, config_file=path, env={"ROUTELLM_SERVE_WEAK_RESPONSES": "chat"})
    assert (config.strong_responses, config.weak_responses) == ("chat", "chat")
    assert load_config(BASE, env={}).weak_responses == "native"


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
    ({"weak_responses": "translate"}, "weak_responses: Input should be 'native' or 'chat'"),
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


# Cost controls ---------------------------------------------------------------------------
PRICES = {"big": [10.0, 30.0], "small": {"input": 0.5, "output": 1.5}}
PRICED = {"big": {"input": 10.0, "output": 30.0}, "small": {"input": 0.5, "output": 1.5}}


def test_prices_from_a_flag_file_the_environment_or_the_config_file(tmp_path):
    json_file = write(tmp_path, PRICES, name="prices.json")
    assert load_config({**BASE, "prices": str(json_file)}, env={}).prices == PRICED  # --prices FILE
    toml_file = write(tmp_path, 'big = [10, 30]\nsmall = { input = 0.5, output = 1.5 }\n', name="prices.toml")
    assert load_config(BASE, env={"ROUTELLM_SERVE_PRICES": str(toml_file)}).prices == PRICED
    inline = write(tmp_path, 'strong_base_url = "http://127.0.0.1:1/v1"\nstrong_model = "big"\n'
                             'weak_base_url = "http://127.0.0.1:2/v1"\nweak_model = "small"\n'
                             '[prices]\nbig = [10, 30]\nsmall = [0.5, 1.5]\n', name="serve.toml")
    assert load_config({}, env={}, config_file=inline).prices == PRICED
    (tmp_path / "sub").mkdir()
    relative = write(tmp_path / "sub", {**BASE, "prices": "../prices.json"})  # relative to the config file
    assert load_config({}, env={}, config_file=relative).prices == PRICED
    assert load_config(BASE, env={}).prices is None


@pytest.mark.parametrize("settings, needle", [
    ({"prices": {"big": [1, 1]}}, "no price for model 'small' (the weak model); the price table has: 'big'"),
    ({"prices": {"small": [1, 1]}}, "no price for model 'big' (the strong model)"),
    ({"prices": {"big": [1, -1], "small": [1, 1]}}, "'big' output price must be a finite number >= 0, got -1.0"),
    ({"prices": {"big": "cheap", "small": [1, 1]}}, "price of 'big' must be (input, output) dollars per million"),
    ({"strong_budget": 5}, "strong_budget (5.0) needs prices to charge strong answers at: give --prices FILE, "
                           "$ROUTELLM_SERVE_PRICES or the config file's prices table"),
    ({"escalate_on": "empty,refusal,polite"},
     "escalate_on[2] is 'polite'; known checks: empty, refusal, length, tool_calls, structured"),
    ({"escalate_on": [1]}, "escalate_on takes check names, got 1"),
    ({"threshold": 0.3, "target_strong_share": 0.2},
     "give either threshold, strong_fraction or target_strong_share, not threshold (0.3) and target_strong_share"),
    ({"strong_fraction": 0.3, "target_strong_share": 0.2}, "not strong_fraction (0.3) and target_strong_share (0.2)"),
    ({"router": "router-mf-0.3", "target_strong_share": 0.2}, "already carries a threshold"),
    ({"target_strong_share": 1.5}, "target_strong_share: Input should be less than or equal to 1 (got 1.5)"),
    ({"target_strong_share": "lots"}, "target_strong_share: Input should be a valid number"),
    ({"target_strong_share": 0.2, "controller_window": 10},
     "controller_window: Input should be greater than or equal to 50 (got 10)"),
    ({"controller_window": 100}, "controller_window (100) is for target_strong_share; set it too"),
    ({"prices": PRICES, "strong_budget": -1}, "strong_budget: Input should be greater than or equal to 0 (got -1)"),
    ({"prices": PRICES, "strong_budget": float("inf")}, "strong_budget: Input should be a finite number"),
    ({"prices": PRICES, "strong_budget": 1, "budget_period": 0}, "budget_period: Input should be greater than 0"),
    ({"prices": PRICES, "strong_budget": 1, "budget_reserve": -0.1}, "budget_reserve: Input should be greater than"),
    ({"budget_period": 60}, "budget_period (60.0) is for strong_budget; set it too"),
    ({"prices": PRICES, "strong_budget": 1, "aliases": {"cheap": "router-mf-0.9"}},
     "aliases (cheap) route with their own router, outside strong_budget; remove them or the budget"),
    ({"prices": PRICES, "strong_budget": 1, "workers": 2},
     "strong_budget keeps its state in one process, and with workers=2 each worker would hold its own"),
    ({"target_strong_share": 0.3, "workers": 4}, "target_strong_share keeps its state in one process"),
])
def test_bad_cost_controls_name_the_problem(settings, needle):
    with pytest.raises(ConfigError) as info:
        load_config({**BASE, **settings}, env={})
    assert needle in str(info.value)


def test_missing_prices_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="prices file '.*nope.json' does not exist"):
        load_config({**BASE, "prices": str(tmp_path / "nope.json")}, env={})
    bad = write(tmp_path, [1, 2], name="bad.json")
    with pytest.raises(ConfigError, match="prices file '.*bad.json' must hold an object, got list"):
        load_config({**BASE, "prices": str(bad)}, env={})


def test_controls_from_env_and_file_and_the_controllers_they_make(tmp_path):
    from shared_core.controller import BudgetController, ShareController

    env = {"ROUTELLM_SERVE_TARGET_STRONG_SHARE": "0.25", "ROUTELLM_SERVE_CONTROLLER_WINDOW": "200",
           "ROUTELLM_SERVE_STRONG_BUDGET": "4", "ROUTELLM_SERVE_BUDGET_PERIOD": "1800",
           "ROUTELLM_SERVE_BUDGET_RESERVE": "0.02", "ROUTELLM_SERVE_ESCALATE_ON": "empty, length"}
    config = load_config({**BASE, "prices": PRICES}, env=env)
    assert config.escalate_on == ("empty", "length")
    budget = config.controller()
    assert isinstance(budget, BudgetController) and (budget.budget, budget.period, budget.reserve) == (4.0, 1800.0, 0.02)
    assert isinstance(budget.inner, ShareController) and (budget.inner.target, budget.inner.window) == (0.25, 200)
    assert config.controller() is not budget  # a new one each time: the app holds its own
    share = load_config({**BASE, "target_strong_share": 0.4}, env={}).controller()
    assert isinstance(share, ShareController) and share.window == 500  # the documented default
    path = write(tmp_path, {**BASE, "escalate_on": "all", "threshold": 0.3})
    config = load_config({}, env={}, config_file=path)
    assert config.escalate_on == ("empty", "refusal", "length", "tool_calls", "structured")
    assert config.controller() is None
    # The flag's target owns the threshold choice over the file's threshold, as strong_fraction would.
    config = load_config({"target_strong_share": 0.2}, env={}, config_file=path)
    assert (config.threshold, config.target_strong_share) == (None, 0.2)
    # ... and a threshold flag over an environment's target takes its window with it.
    config = load_config({**BASE, "threshold": 0.4}, env={k: env[k] for k in ("ROUTELLM_SERVE_TARGET_STRONG_SHARE", "ROUTELLM_SERVE_CONTROLLER_WINDOW")})
    assert (config.threshold, config.target_strong_share, config.controller_window) == (0.4, None, None)

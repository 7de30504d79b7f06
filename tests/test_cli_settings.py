"""One settings resolver for every command: defaults < --config < --set < explicit flags, the same messages."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from avrec.cli import build_parser, main
from avrec.cli.settings import load_settings, resolve_settings
from avrec.errors import ConfigError


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-settings")
    items = [f"a{i}" for i in range(6)] + [f"b{i}" for i in range(6)]
    pd.DataFrame({"item_id": items, "title": [f"Song {i}" for i in items],
                  "genres": ["Rock"] * 6 + ["Jazz"] * 6}).to_csv(folder / "items.csv", index=False)
    rows = [(f"u{u}", f"{'a' if u < 6 else 'b'}{(u + j) % 6}", 1000 + j) for u in range(12) for j in range(4)]
    pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).to_csv(folder / "interactions.csv", index=False)
    return folder


def test_fit_file_then_set_on_nested_hybrid_keys(tiny, tmp_path, capsys):
    cfg = tmp_path / "cfg.toml"
    cfg.write_text("seed = 5\n[models.hybrid]\nuse_lm = false\nmax_steps = 10\neval_every = 5\ndim = 8\nhidden = 8\n"
                   "[models.hybrid.ease]\nl2 = 300.0\n[models.hybrid.als]\nfactors = 4\niterations = 2\n")
    out = tmp_path / "hybrid"
    code = main(["fit", str(tiny), "--model", "hybrid", "--out", str(out), "--config", str(cfg),
                 "--set", "models.hybrid.ease.l2=250", "--set", "als_alpha=5", "--run-dir", str(tmp_path / "run")])
    assert code == 0, capsys.readouterr().err
    saved = json.loads((out / "config.json").read_text())["config"]
    assert saved["ease"]["l2"] == 250.0  # --set beats the file
    assert (saved["als"]["factors"], saved["als"]["iterations"]) == (4, 2)
    assert saved["als"]["alpha"] == 5.0  # an old flat key, through the ``model.*`` shortcut
    assert saved["seed"] == 5 and "ease_l2" not in saved
    # an old key and its new name in the same model's settings: one error line, not a silent pick
    code = main(["fit", str(tiny), "--model", "hybrid", "--out", str(out), "--config", str(cfg),
                 "--set", "models.hybrid.ease_l2=1", "--run-dir", str(tmp_path / "run2")])
    assert code == 2
    assert capsys.readouterr().err.strip() == (
        "error: models.hybrid.ease_l2 is an old name of models.hybrid.ease.l2; set only one of them")


def test_evaluate_flags_beat_set_and_file(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("split:\n  method: random\n  seed: 3\neval:\n  k: 20\n")
    raw = load_settings(str(cfg), ["eval.k=7", "split.method=cold_item"])
    settings = resolve_settings(raw, ["pop"])
    assert (settings.eval.k, settings.split.method, settings.split.seed) == (7, "cold_item", 3)
    settings = resolve_settings(raw, ["pop"], split_method="temporal_loo", k=5)
    assert (settings.eval.k, settings.split.method) == (5, "temporal_loo")
    with pytest.raises(ConfigError, match=r"eval\.k: 'many' is not a valid int"):
        resolve_settings(load_settings(str(cfg), ["eval.k=many"]), [], k=None)


def test_bad_nested_key_is_one_line_exit_2(tiny, tmp_path, capsys):
    code = main(["fit", str(tiny), "--model", "hybrid", "--out", str(tmp_path / "m"),
                 "--set", "models.hybrid.ease.l3=1", "--run-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and err.strip() == (
        "error: unknown setting 'models.hybrid.ease.l3' for EASEConfig; valid: l2, max_items")


def test_finetune_file_set_and_run_seed(tmp_path):
    from avrec.cli.finetune import LAYOUT, RankerJobConfig, job_config
    from avrec.cli.settings import run_seed
    from avrec.finetune.mlm import MLMConfig

    cfg = tmp_path / "ft.toml"
    cfg.write_text("seed = 7\nmax_length = 32\n[train]\nlr = 1e-4\nbatch_size = 4\n[data]\nrating_threshold = 4\n")
    raw = load_settings(str(cfg), ["train.lr=3e-5", "ranker.max_length=96"], LAYOUT)
    del raw["max_length"]  # an MLM setting, not the ranker job's
    job = job_config(RankerJobConfig, raw, run_seed(raw))
    assert job.train.lr == 3e-5 and job.train.batch_size == 4 and job.ranker.max_length == 96
    assert job.train.seed == 7  # the run seed reaches train.seed ...
    raw = load_settings(str(cfg), ["train.seed=1"], LAYOUT)
    mlm = job_config(MLMConfig, raw, run_seed(raw))
    assert mlm.max_length == 32 and mlm.train.seed == 1  # ... unless it is set
    with pytest.raises(ConfigError, match=r"unknown setting 'bogus' for MLMConfig; valid: .*max_length"):
        job_config(MLMConfig, load_settings(None, ["bogus=1"], LAYOUT), 0)
    with pytest.raises(ConfigError, match=r"seed: 'x' is not an integer"):
        run_seed(load_settings(None, ["seed=x"], LAYOUT))


def serve_args(*argv: str):
    return build_parser().parse_args(["serve", "MODEL_DIR", *argv])


def test_serve_file_then_set_then_flags(tmp_path):
    from avrec.cli.serve import serve_settings

    cfg = tmp_path / "serve.toml"
    cfg.write_text('[data]\nrating_threshold = 4\n[serve]\nport = 8500\napi_key = "from-file"\nsearch = true\n'
                   'host = "127.0.0.2"\nwatch_interval = 9\n')
    host, port, store, config = serve_settings(serve_args("--config", str(cfg)))
    assert (host, port, store, config.api_key, config.watch_interval) == ("127.0.0.2", 8500, None, "from-file", 9.0)
    host, port, store, config = serve_settings(serve_args(
        "--config", str(cfg), "--set", "port=9000", "--set", "serve.api_key=from-set", "--set", "store=e.sqlite3",
        "--set", "watch_interval=4"))
    assert (port, store, config.api_key, config.watch_interval, config.search) == (9000, "e.sqlite3", "from-set", 4.0, True)
    host, port, store, config = serve_settings(serve_args(
        "--config", str(cfg), "--set", "port=9000", "--port", "9100", "--no-search", "--watch-interval", "0",
        "--host", "127.0.0.1"))
    assert (host, port, config.search, config.watch_interval) == ("127.0.0.1", 9100, False, 0.0)
    assert not hasattr(config, "port")  # the service gets a plain ServeConfig
    with pytest.raises(ConfigError, match=r"unknown setting 'serve\.bogus' for ServeCommandConfig; valid: .*api_key.*port"):
        serve_settings(serve_args("--set", "bogus=1"))
    with pytest.raises(ConfigError, match=r"serve\.port: 'high' is not a valid int"):
        serve_settings(serve_args("--set", "port=high"))
    with pytest.raises(ConfigError, match="--port must be between 0 and 65535"):
        serve_settings(serve_args("--port", "70000"))


def test_serve_bad_setting_exits_2_before_loading(tmp_path, capsys):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    code = main(["serve", str(tmp_path / "m"), "--set", "serve.max_body_bytes=lots"])
    err = capsys.readouterr().err
    assert code == 2 and err.strip() == "error: serve.max_body_bytes: 'lots' is not a valid int"


def test_settings_of_a_model_not_fitted_now_are_still_checked(tiny, tmp_path, capsys):
    """A typo in another model's settings (a shared config file) is found now, not when that model runs."""
    settings = resolve_settings(load_settings(None, ["models.als.factors=16"]), ["pop"])
    assert list(settings.models) == ["pop"]
    with pytest.raises(ConfigError, match=r"models\.als\.factors: 'many' is not a valid int"):
        resolve_settings(load_settings(None, ["models.als.factors=many"]), ["pop"])
    with pytest.raises(ConfigError, match=r"unknown setting 'models\.als\.factorz' for ALSConfig"):
        resolve_settings(load_settings(None, ["models.als.factorz=3"]), ["pop"])
    code = main(["fit", str(tiny), "--model", "pop", "--out", str(tmp_path / "m"),
                 "--set", "models.nosuch.x=1", "--run-dir", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: models.nosuch: unknown model 'nosuch'") and err.count("\n") == 1

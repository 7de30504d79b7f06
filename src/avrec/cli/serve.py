"""``avrec serve`` (HTTP API + web page); ``avrec update`` and ``avrec versions`` are in :mod:`avrec.cli.versions`."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import sys
from dataclasses import dataclass, fields
from pathlib import Path

from avrec.cli.settings import Layout, add_settings_options, load_settings, section
from avrec.errors import ConfigError
from avrec.serve.config import ServeConfig

#: Everything is in the ``[serve]`` table (``--set api_key=x`` is short for ``--set serve.api_key=x``); a
#: shared file's other tables are for other commands.
LAYOUT = Layout(("serve",), loose="serve", other_keys="ignore")


@dataclass
class ServeCommandConfig(ServeConfig):
    """:class:`ServeConfig` plus where ``avrec serve`` listens and keeps its events."""

    host: str = "127.0.0.1"
    port: int = 8000
    store: str | None = None


def default_store(model_dir: Path) -> Path:
    """The event store used when ``--store`` is not given: next to the model folder, never inside it."""
    model_dir = Path(model_dir).resolve()
    return model_dir.parent / f"{model_dir.name}-events.sqlite3"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="serve a fitted model over HTTP (API, web page, metrics)",
        description="Serve MODEL_DIR with FastAPI + uvicorn: /recommend, /search, /feedback, ..., the web page "
        "at / and OpenAPI docs at /docs. Writes need X-API-Key = $AVREC_API_KEY (or serve.api_key in --config). "
        "The model folder is reloaded without downtime when a new model is saved there.",
    )
    p.add_argument("model_dir", metavar="MODEL_DIR", help="a folder written by `avrec fit --out`")
    p.add_argument("--host", default=None, help="interface to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--store", default=None,
                   help="event store: a SQLite file (default: MODEL_DIR-events.sqlite3 beside it) or a "
                        "postgresql://USER@HOST:PORT/DB URL shared by several servers")
    add_settings_options(p, example="serve.api_key=KEY, watch_interval=5",
                         config_help="TOML/YAML file with a [serve] table (api_key, port, ...)")
    p.add_argument("--insecure-dev", action="store_true",
                   help="accept writes without an API key when none is configured (loopback only; for demos)")
    p.add_argument("--no-search", action="store_true", help="do not build the natural-language search index")
    p.add_argument("--policy", default=None, choices=["greedy", "epsilon", "softmax", "linucb", "thompson", "model"],
                   help="exploration policy of /recommend (default greedy; settings: --set exploration.epsilon=0.2; "
                        "model: the policy saved in a pipeline model's settings)")
    p.add_argument("--watch-interval", type=float, default=None,
                   help="seconds between checks of MODEL_DIR for a new model (0 disables; default 2)")
    p.add_argument("--max-body-bytes", type=int, default=None,
                   help="largest request body accepted, in bytes (413 above it; 0 disables; default 32 MiB)")
    p.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"])
    p.add_argument("--compute-threads", type=int, default=1,
                   help="BLAS/torch threads per request (default 1: requests run in parallel, and threaded "
                        "BLAS inside concurrent requests thrashes the cores: 18 against 390 req/s for hybrid)")
    p.add_argument("--workers", type=int, default=1,
                   help="server processes sharing the port (default 1); each maps the model files (shared "
                        "pages) and opens its own store connection; feedback sent to one is in the others' "
                        "next answer for that user")
    p.set_defaults(func=cmd_serve)


def serve_settings(args: argparse.Namespace) -> tuple[str, int, str | None, ServeConfig]:
    """(host, port, store, ServeConfig): defaults < the file's ``[serve]`` table < ``--set`` < the flags."""
    flags = {"host": args.host, "port": args.port, "store": args.store, "watch_interval": args.watch_interval,
             "insecure_dev": True if args.insecure_dev else None, "search": False if args.no_search else None,
             "max_body_bytes": args.max_body_bytes, "policy": args.policy}
    cfg = section(load_settings(args.config, args.set, LAYOUT), "serve", ServeCommandConfig(), flags)
    if not 0 <= cfg.port <= 65535:
        raise ConfigError(f"--port must be between 0 and 65535, not {cfg.port}")
    if cfg.max_body_bytes < 0:
        raise ConfigError(f"--max-body-bytes must be 0 (no limit) or more, not {cfg.max_body_bytes}")
    config = ServeConfig(**{f.name: getattr(cfg, f.name) for f in fields(ServeConfig)})
    return cfg.host, cfg.port, cfg.store, config


def limit_compute_threads(n: int) -> None:
    """Cap BLAS, OpenMP and torch threads for the whole process (a server parallelises across requests)."""
    import torch
    from threadpoolctl import threadpool_limits

    threadpool_limits(n)
    torch.set_num_threads(n)


def _service_app(args: argparse.Namespace):
    """(app, service, store, host, port) of one server process, from the command's arguments."""
    from avrec.cli.common import require_model_folder
    from avrec.serve.app import create_app
    from avrec.serve.service import RecommenderService
    from avrec.serve.store import EventStore

    model_dir = require_model_folder(args.model_dir)
    host, port, store_path, config = serve_settings(args)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    limit_compute_threads(args.compute_threads)
    store = EventStore(store_path or default_store(model_dir))
    service = RecommenderService(model_dir, store, config)
    return create_app(service), service, store, host, port


#: the environment variable that hands ``avrec serve``'s arguments to its worker processes (JSON)
WORKER_ARGS = "AVREC_SERVE_WORKER_ARGS"


def worker_app():
    """The app of one ``--workers`` process (uvicorn's factory, called in each spawned worker)."""
    import json

    args = argparse.Namespace(**json.loads(os.environ[WORKER_ARGS]))
    return _service_app(args)[0]


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn
    except ImportError:
        raise ConfigError("serving needs fastapi and uvicorn: pip install fastapi uvicorn") from None

    host, port, _store, config = serve_settings(args)  # checked before anything is loaded
    if config.insecure_dev and not _is_loopback(host):
        raise ConfigError(f"--insecure-dev only binds a loopback address (127.0.0.1), not {host}")
    if not _is_loopback(host):
        print(f"warning: binding {host}: the API is reachable from other machines", file=sys.stderr)
    if args.compute_threads < 1:
        raise ConfigError(f"--compute-threads must be at least 1, not {args.compute_threads}")
    if args.workers < 1:
        raise ConfigError(f"--workers must be at least 1, not {args.workers}")
    if args.workers > 1:
        from avrec.policies.registry import POLICIES

        if config.policy == "model" or (config.policy in POLICIES and POLICIES[config.policy].learns):
            # a learning policy's parameters equal a batch fit on the whole log only in one process
            raise ConfigError(f"--workers {args.workers}: the {config.policy!r} policy learns online in one "
                              "process; serve it with --workers 1 (or choose greedy, epsilon or softmax)")
        return _serve_workers(args, host, port)
    app, service, store, host, port = _service_app(args)
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=args.log_level, access_log=False,
                                           timeout_graceful_shutdown=5))
    _announce(server, host, service, store)
    server.run()
    store.close()
    return 0


def _serve_workers(args: argparse.Namespace, host: str, port: int) -> int:
    """``--workers N``: the port bound here once, N spawned uvicorn workers accepting on it (each builds
    its service through :func:`worker_app`; uvicorn restarts one that dies)."""
    import json

    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from avrec.cli.common import require_model_folder

    model_dir = require_model_folder(args.model_dir)
    # open the store once here: a corrupt or too new store is one error and exit 2 before any worker
    # starts (a worker failing at start would be restarted by uvicorn, a crash loop), and the workers
    # then find the schema migrated
    from avrec.serve.store import EventStore

    EventStore(serve_settings(args)[2] or default_store(model_dir)).close()
    os.environ[WORKER_ARGS] = json.dumps({k: v for k, v in vars(args).items() if k != "func"})
    config = uvicorn.Config("avrec.cli.serve:worker_app", factory=True, host=host, port=port,
                            workers=args.workers, log_level=args.log_level, access_log=False,
                            timeout_graceful_shutdown=5)
    sock = config.bind_socket()
    sock.listen(config.backlog)  # connections wait in the backlog while the workers load the model
    shown = "127.0.0.1" if host in ("0.0.0.0", "localhost") else host
    print(f"avrec: serving {args.model_dir} with {args.workers} worker processes", flush=True)
    print(f"avrec: open http://{shown}:{sock.getsockname()[1]}/  (API docs: http://{shown}:{sock.getsockname()[1]}"
          f"/docs)", flush=True)
    Multiprocess(config, sockets=[sock]).run()
    return 0


def _announce(server, host: str, service, store) -> None:
    """Print the URL once uvicorn is listening (the real port, also when --port 0 picked one)."""
    original = server.startup

    async def startup(sockets=None):
        await original(sockets=sockets)
        port = None
        for s in getattr(server, "servers", []):
            for sock in s.sockets:
                port = sock.getsockname()[1]
        shown = "127.0.0.1" if host in ("0.0.0.0", "localhost") else host
        writes = service.health()["writes"]
        print(f"avrec: serving {service.state.model.name} model ({service.state.model.n_items} items) "
              f"from {service.model_dir}", flush=True)
        print(f"avrec: event store {store.path}; writes: {writes}", flush=True)
        print(f"avrec: open http://{shown}:{port}/  (API docs: http://{shown}:{port}/docs)", flush=True)

    server.startup = startup

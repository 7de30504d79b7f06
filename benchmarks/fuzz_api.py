"""The long schemathesis run over the HTTP API (issue 15): many examples per route, valid and invalid.

Same setup and checks as tests/test_fuzz_api.py (in-process ASGI app over a tiny itemknn model, search on,
writes behind an API key; checks not_a_server_error, response_schema_conformance, status_code_conformance),
with ``--examples`` generated requests per operation and generation mode. Writes
benchmarks/results/fuzz_api.json and .md (one row per operation and mode: examples run, failures found).

    flock /tmp/avrec-heavy.lock nice -n 10 .venv/bin/python benchmarks/fuzz_api.py --examples 300
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the fuzz runner and the tiny catalogue live with the tests

from test_fuzz_api import fuzz, fuzz_app  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=300, help="generated requests per operation and mode")
    ap.add_argument("--seed", type=int, default=15)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "fuzz_api"))
    args = ap.parse_args(argv)
    import schemathesis

    with tempfile.TemporaryDirectory(prefix="avrec-fuzz-") as tmp:
        app, service = fuzz_app(Path(tmp), search=True)
        start = time.perf_counter()
        report = fuzz(app, args.examples, seed=args.seed)
        seconds = time.perf_counter() - start
        service.close()
    ops = report["operations"]
    failures = sum(len(op["failures"]) for op in ops)
    result = {
        "schemathesis": schemathesis.__version__ if hasattr(schemathesis, "__version__") else "",
        "checks": ["not_a_server_error", "response_schema_conformance", "status_code_conformance"],
        "examples_per_operation_and_mode": args.examples, "seed": args.seed,
        "operations": len({op["label"] for op in ops}), "runs": len(ops),
        "requests": sum(op["examples"] for op in ops), "failures": failures, "seconds": round(seconds, 1),
        "detail": ops,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    lines = [
        "# Schemathesis over /openapi.json (benchmarks/fuzz_api.py)", "",
        f"{result['operations']} operations × positive and negative generation, up to {args.examples} examples "
        f"each (seed {args.seed}): **{result['requests']} requests, {failures} failures** "
        f"(checks: {', '.join(result['checks'])}) in {result['seconds']} s.", "",
        "| operation | mode | examples | failures |", "|---|---|---:|---:|",
    ]
    lines += [f"| `{op['label']}` | {op['mode']} | {op['examples']} | {len(op['failures'])} |" for op in ops]
    if failures:
        lines += ["", "## Failures", ""] + [f"- `{op['label']}` ({op['mode']}): {f[:300]}"
                                            for op in ops for f in op["failures"]]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"{result['requests']} requests over {result['operations']} operations: {failures} failures "
          f"({seconds:.0f} s); wrote {out.with_suffix('.json')} and .md")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

"""Record what the pinned LiteLLM proxy really sends: `python -m tests.support.transcripts.record` from the repo root.

Starts the proxy through `tests/support/litellm_proxy.py` (installing its venv on first use), sends every request of
`REQUESTS`, and writes each answer body byte for byte to `litellm_<case>.sse` (an event stream) or
`litellm_<case>.json`, with the normalized usage the server reported beside it in `<name>.expected.json`.
`tests/functions/test_litellm_protocols.py` checks that the live proxy still answers the same.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.support.litellm_proxy import REQUESTS, running_proxy, send
from tests.support.usage_reference import expected_path, extract

HERE = Path(__file__).resolve().parent


def file_name(case: str, content_type: str) -> str:
    return f"litellm_{case}.sse" if content_type.startswith("text/event-stream") else f"litellm_{case}.json"


def main() -> int:
    with running_proxy() as proxy:
        print(f"litellm {proxy.version} answered after {proxy.startup_seconds:.1f} s at {proxy.base_url}")
        for case in REQUESTS:
            status, content_type, raw = send(proxy, case)
            if status != 200:
                print(f"{case}: HTTP {status}: {raw[:500]!r}", file=sys.stderr)
                return 1
            path = HERE / file_name(case, content_type)
            for stale in HERE.glob(f"litellm_{case}.*"):
                stale.unlink()
            path.write_bytes(raw)
            expected = extract(raw, streamed=path.suffix == ".sse")
            expected_path(path).write_text(json.dumps(expected, indent=2) + "\n")
            print(f"{path.name}: {len(raw)} bytes, {expected}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

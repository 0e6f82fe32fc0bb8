"""Docker HEALTHCHECK: exit 0 when GET /readyz answers 200 (model loaded, database reachable).

Standard library only, so the runtime image needs no curl. PORT matches docker/entrypoint.sh."""

import os
import sys
import urllib.request

url = f"http://127.0.0.1:{os.environ.get('PORT', '8000')}/readyz"
try:
    with urllib.request.urlopen(url, timeout=4) as response:  # noqa: S310 (fixed loopback URL)
        sys.exit(0 if response.status == 200 else 1)
except Exception as exc:  # HTTPError (503 while not ready), connection refused, timeout
    print(f"not ready: {exc}", file=sys.stderr)
    sys.exit(1)

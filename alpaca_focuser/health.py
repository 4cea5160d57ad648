"""``alpaca-focuser healthcheck``: is the local server answering Alpaca requests?

Used by Docker's HEALTHCHECK and handy from a shell. It asks /management/apiversions, which every Alpaca server
answers without touching hardware, so a busy focuser never fails its health check.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request

DEFAULT_URL = "http://127.0.0.1:11111/management/apiversions"
# Lets a container whose config uses another port or address keep the stock HEALTHCHECK line.
URL_ENV = "ALPACA_FOCUSER_HEALTHCHECK_URL"


def _fail(reason: str) -> int:
    print(f"unhealthy: {reason}", file=sys.stderr)
    return 1


def check(url: str = DEFAULT_URL, timeout: float = 5.0) -> int:
    """0 when ``url`` answers HTTP 200 with JSON whose "Value" contains 1; else 1 and one line on stderr."""
    # No proxies: the probe is for this machine, and an inherited http_proxy would test the proxy instead.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as response:
            status = response.status
            body = response.read(65536)
    except urllib.error.HTTPError as exc:
        return _fail(f"{url} answered HTTP {exc.code}")
    except (urllib.error.URLError, OSError, ValueError) as exc:  # ValueError: a malformed URL
        reason = getattr(exc, "reason", exc)
        return _fail(f"{url}: {reason}")
    if status != 200:
        return _fail(f"{url} answered HTTP {status}")
    try:
        value = json.loads(body)["Value"]
    except (ValueError, KeyError, TypeError):
        return _fail(f"{url} did not answer Alpaca JSON with a Value")
    if not isinstance(value, list) or 1 not in value:
        return _fail(f"{url} does not offer Alpaca API version 1 (Value={value!r})")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=os.environ.get(URL_ENV, DEFAULT_URL),
                        help=f"apiversions URL to probe (default: ${URL_ENV} or {DEFAULT_URL})")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the answer (default 5)")


def run(args: argparse.Namespace) -> int:
    return check(args.url, args.timeout)

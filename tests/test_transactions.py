"""Transaction IDs and concurrency against a real waitress server on 127.0.0.1."""

from __future__ import annotations

import json
import random
import socket
import threading
import time
from typing import Callable

from alpaca_focuser.app import FocuserServer
from alpaca_http import AlpacaHttp

THREADS = 16
REQUESTS = 100

# (verb, path, form or query parameters without the IDs)
MIX: list[tuple[str, str, dict[str, str]]] = [
    ("GET", "/api/v1/focuser/0/name", {}),
    ("GET", "/api/v1/focuser/1/position", {}),
    ("GET", "/api/v1/focuser/0/ismoving", {}),
    ("GET", "/api/v1/focuser/1/devicestate", {}),
    ("GET", "/api/v1/focuser/0/connected", {}),
    ("GET", "/management/apiversions", {}),
    ("GET", "/management/v1/configureddevices", {}),
    ("PUT", "/api/v1/focuser/0/connected", {"Connected": "true"}),
    ("PUT", "/api/v1/focuser/1/connect", {}),
    ("PUT", "/api/v1/focuser/0/move", {"Position": "1000"}),
    ("PUT", "/api/v1/focuser/1/move", {"Position": "200"}),
    ("PUT", "/api/v1/focuser/0/halt", {}),
    ("PUT", "/api/v1/focuser/1/tempcomp", {"TempComp": "false"}),
    ("PUT", "/api/v1/focuser/0/action", {"Action": "Bogus", "Parameters": ""}),
]


def test_server_transaction_ids_are_unique_under_16_concurrent_clients(
        server_factory: Callable[..., FocuserServer]) -> None:
    server = server_factory({"name": "A", "speed": 20000}, {"name": "B", "speed": 20000}, server={"threads": 8})
    results: list[tuple[int, int, int]] = []  # (sent ClientTransactionID, echoed, ServerTransactionID)
    failures: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(THREADS)

    def client(index: int) -> None:
        rng = random.Random(index)
        conn = AlpacaHttp("127.0.0.1", server.port, timeout=10)
        mine = []
        try:
            start.wait()
            for n in range(REQUESTS):
                verb, path, params = rng.choice(MIX)
                sent = index * 1_000_000 + n + 1
                body = conn.call(verb, path, {**params, "ClientID": str(index + 1), "ClientTransactionID": str(sent)})
                mine.append((sent, body["ClientTransactionID"], body["ServerTransactionID"]))
        except BaseException as exc:  # reported by the main thread
            with lock:
                failures.append(exc)
        finally:
            conn.close()
            with lock:
                results.extend(mine)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failures, failures[:3]
    assert len(results) == THREADS * REQUESTS
    assert all(sent == echoed for sent, echoed, _ in results)
    server_ids = [sid for _, _, sid in results]
    assert min(server_ids) >= 1
    assert len(set(server_ids)) == len(server_ids), "ServerTransactionIDs repeat"


def test_keep_alive_connection_serves_many_requests(server_factory: Callable[..., FocuserServer]) -> None:
    server = server_factory()
    with AlpacaHttp("127.0.0.1", server.port, timeout=5) as http:
        ids = [http.call("GET", "name", ClientTransactionID=str(n)) for n in range(1, 21)]
        assert [b["ClientTransactionID"] for b in ids] == list(range(1, 21))
        server_ids = [b["ServerTransactionID"] for b in ids]
        assert server_ids == sorted(server_ids) and len(set(server_ids)) == 20
        assert http.conn.sock is not None  # the same connection throughout


def test_two_devices_move_at_once(server_factory: Callable[..., FocuserServer]) -> None:
    server = server_factory({"name": "A", "speed": 2000}, {"name": "B", "speed": 2000})
    with AlpacaHttp("127.0.0.1", server.port, 0, timeout=5) as dev0, \
            AlpacaHttp("127.0.0.1", server.port, 1, timeout=5) as dev1:
        for dev in (dev0, dev1):
            dev.put("connected", Connected="true")
        dev0.put("move", Position="10000")  # 5 s at 2000 steps/s
        started = time.monotonic()
        assert dev1.value("name") == "B"
        latency = time.monotonic() - started
        assert latency < 0.5, f"device 1 answered after {latency:.2f} s while device 0 was moving"
        dev1.put("move", Position="10000")
        both = [dev0.value("ismoving"), dev1.value("ismoving")]
        assert both == [True, True]
        time.sleep(0.2)
        p0 = dev0.value("position")
        p1 = dev1.value("position")
        assert 0 < p0 < 10000 and 0 < p1 < 10000, (p0, p1)  # both advanced, neither has arrived
        state = {e["Name"]: e["Value"] for e in dev1.value("devicestate")}
        assert state["IsMoving"] is True
        started = time.monotonic()
        dev1.put("halt")
        assert time.monotonic() - started < 0.5
        assert dev1.value("ismoving") is False
        assert dev0.value("ismoving") is True  # halting 1 leaves 0 alone
        dev0.put("halt")


def test_connect_of_one_device_does_not_block_the_other(server_factory: Callable[..., FocuserServer]) -> None:
    server = server_factory({"name": "A", "speed": 20000}, {"name": "B", "speed": 20000})
    with AlpacaHttp("127.0.0.1", server.port, 0, timeout=5) as dev0, \
            AlpacaHttp("127.0.0.1", server.port, 1, timeout=5) as dev1:
        assert dev0.call("PUT", "connect")["ErrorNumber"] == 0
        assert dev0.call("GET", "connecting")["Value"] is True
        assert dev1.call("GET", "connecting")["Value"] is False
        assert dev1.call("GET", "connected")["Value"] is False


def test_stopping_a_server_halts_moving_focusers_and_saves_where_they_stopped(
        server_factory: Callable[..., FocuserServer]) -> None:
    server = server_factory({"name": "A", "speed": 2000}, {"name": "B", "speed": 2000})
    with AlpacaHttp("127.0.0.1", server.port, timeout=5) as http:
        for n in (0, 1):
            assert http.call("PUT", f"/api/v1/focuser/{n}/connected", Connected="true")["ErrorNumber"] == 0
        assert http.call("PUT", "/api/v1/focuser/0/move", Position="20000")["ErrorNumber"] == 0
        time.sleep(0.2)
    server.stop()
    driver = server.devices[0].driver
    stopped = driver.status()
    assert stopped.moving is False
    assert 0 < stopped.position < 20000
    time.sleep(0.1)
    assert driver.status().position == stopped.position
    assert server.store.position(0) == stopped.position
    saved = json.loads(server.store.path.read_text(encoding="utf-8"))
    assert saved["focusers"]["0"]["position"] == stopped.position
    assert saved["focusers"]["1"]["position"] == 0
    with socket.socket() as s:  # the HTTP port is closed
        s.settimeout(2)
        assert s.connect_ex(("127.0.0.1", server.port)) != 0

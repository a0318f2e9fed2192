#!/usr/bin/env python3
"""A small FleetLock server for the tests (no FleetLock server is packaged for Debian).

Follows the protocol as Zincati documents it (docs/development/fleetlock/protocol.md in
coreos/zincati): a counting semaphore per group, with recursive locking and lock
ownership.

  POST <base>/v1/pre-reboot    RecursiveLock: take a slot for client_params.id in
                               client_params.group (200 if taken or already held by it)
  POST <base>/v1/steady-state  UnlockIfHeld: release it (200 whether held or not)

Every request must carry the header `fleet-lock-protocol: true` and a JSON body
{"client_params": {"id": <non-empty string>, "group": <^[a-zA-Z0-9.-]+$>}}. Only 200 is
success; errors are JSON {"kind": ..., "value": ...} with a 4xx/5xx status, `kind` from a
small fixed set.

Not part of the protocol, for the tests: `GET <base>/debug/holders` answers
{"<group>": [ids...]}; --events FILE appends one JSON line per request (time, endpoint,
id, group, status, holders after it), so a test can prove two machines never held a slot
at the same time.

Also for the tests: --huge-error MIB makes every lock request fail with HTTP 500 and a
body of MIB mebibytes (streamed, never held in memory here): a client must not read it
whole.

Usage: server.py [--host 127.0.0.1] [--port 0] [--port-file F] [--slots N]
                 [--group-slots GROUP=N ...] [--base /prefix] [--events FILE]
                 [--huge-error MIB]
Prints "listening on http://HOST:PORT<base>" on stdout once it accepts connections.
"""

import argparse
import json
import os
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

GROUP = re.compile(r"^[a-zA-Z0-9.-]+$")
MAX_BODY = 64 * 1024


class Semaphores:
    def __init__(self, slots, group_slots):
        self.slots = slots
        self.group_slots = group_slots
        self.holders = {}  # group -> list of ids, in lock order
        self.lock = threading.Lock()

    def limit(self, group):
        return self.group_slots.get(group, self.slots)

    def pre_reboot(self, group, client_id):
        with self.lock:
            held = self.holders.setdefault(group, [])
            if client_id in held:
                return 200, None
            if len(held) < self.limit(group):
                held.append(client_id)
                return 200, None
            return 409, (
                "failed_lock_semaphore_full",
                "semaphore currently full, all slots are locked already (held by %s)"
                % ", ".join(held),
            )

    def steady_state(self, group, client_id):
        with self.lock:
            held = self.holders.setdefault(group, [])
            if client_id in held:
                held.remove(client_id)
            return 200, None

    def snapshot(self):
        with self.lock:
            return {g: list(ids) for g, ids in self.holders.items() if ids}


def make_handler(sems, base, events, huge_error=0):
    events_lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        server_version = "homelab-agent-test-fleetlock/1"
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):
            sys.stderr.write("fleetlock: " + (fmt % args) + "\n")

        def reply(self, status, payload):
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def error(self, status, kind, value):
            self.reply(status, {"kind": kind, "value": value})

        def record(self, endpoint, client_id, group, status):
            if not events:
                return
            line = json.dumps(
                {
                    "time": time.time(),
                    "endpoint": endpoint,
                    "id": client_id,
                    "group": group,
                    "status": status,
                    "holders": sems.snapshot(),
                }
            )
            with events_lock, open(events, "a") as f:
                f.write(line + "\n")

        def endpoint(self):
            path = self.path.split("?", 1)[0]
            if not path.startswith(base + "/"):
                return None
            return path[len(base) + 1 :]

        def do_GET(self):
            if self.endpoint() == "debug/holders":
                return self.reply(200, sems.snapshot())
            self.error(404, "not_found", "no such endpoint")

        def huge(self, endpoint):
            size = huge_error * 1024 * 1024
            self.record(endpoint, None, None, 500)
            self.send_response(500)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            chunk = b"x" * (1024 * 1024)
            try:
                for _ in range(huge_error):
                    self.wfile.write(chunk)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client stopped reading: what it should do
            self.close_connection = True

        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                return self.error(413, "body_too_large", "request body too large")
            raw = self.rfile.read(length) if length else b""
            endpoint = self.endpoint()
            if huge_error and endpoint in ("v1/pre-reboot", "v1/steady-state"):
                return self.huge(endpoint)
            if endpoint not in ("v1/pre-reboot", "v1/steady-state"):
                return self.error(404, "not_found", "no such endpoint")
            if self.headers.get("fleet-lock-protocol") != "true":
                return self.error(
                    400,
                    "missing_fleet_lock_header",
                    "the fleet-lock-protocol header must be 'true'",
                )
            try:
                params = json.loads(raw)["client_params"]
                client_id = params["id"]
                group = params["group"]
            except (ValueError, KeyError, TypeError):
                return self.error(
                    400, "invalid_body", "expected {\"client_params\": {\"id\", \"group\"}}"
                )
            if not isinstance(client_id, str) or not client_id:
                return self.error(400, "invalid_id", "client_params.id must be a non-empty string")
            if not isinstance(group, str) or not GROUP.match(group):
                return self.error(
                    400, "invalid_group", "client_params.group must match ^[a-zA-Z0-9.-]+$"
                )
            if endpoint == "v1/pre-reboot":
                status, err = sems.pre_reboot(group, client_id)
            else:
                status, err = sems.steady_state(group, client_id)
            self.record(endpoint, client_id, group, status)
            if err:
                return self.error(status, *err)
            self.reply(200, {})

    return Handler


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file", help="write the port here once listening")
    ap.add_argument("--slots", type=int, default=1, help="slots per group (default 1)")
    ap.add_argument("--group-slots", action="append", default=[], metavar="GROUP=N")
    ap.add_argument("--base", default="", help="path prefix of the base URL, e.g. /lock")
    ap.add_argument("--events", help="append one JSON line per lock request here")
    ap.add_argument(
        "--huge-error", type=int, default=0, metavar="MIB",
        help="answer every lock request with HTTP 500 and a body of MIB mebibytes",
    )
    args = ap.parse_args()
    group_slots = {}
    for item in args.group_slots:
        name, _, n = item.partition("=")
        if not GROUP.match(name) or not n.isdigit():
            ap.error("--group-slots takes GROUP=N, got %r" % item)
        group_slots[name] = int(n)
    base = args.base.rstrip("/")
    if base and not base.startswith("/"):
        ap.error("--base must start with /")
    sems = Semaphores(args.slots, group_slots)
    httpd = ThreadingHTTPServer((args.host, args.port), make_handler(sems, base, args.events, args.huge_error))
    port = httpd.server_address[1]
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % port)
        os.replace(tmp, args.port_file)
    print("listening on http://%s:%d%s" % (args.host, port, base), flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()

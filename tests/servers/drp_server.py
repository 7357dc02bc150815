#!/usr/bin/env python3
"""A contract server for Digital Rebar Provision's files and token API.

dr-provision is closed source, so goldcap's upload tests run against this
stand-in. It follows the documented behaviour of the server
(../shared/reference/drp-image-builder.md §2-3, from the last open-source
server, frontend/file_common.go and frontend/frontend.go), and nothing more:

  POST   /api/v3/files/<path>    raw body (Content-Type application/octet-stream)
                                 written to <dir>/<path>.part (DRP's
                                 ".%s.part" % path.Clean("/<path>")), then
                                 renamed over <path>;
                                 201 {"Path":"/<path>","Size":N}
                                 400 "N bytes expected, but only M bytes received"
                                     when Content-Length > 0 and the body is short
                                 400 "Want content-type application/octet-stream, not X"
                                 403 "Cannot upload a directory" (path ends in /)
                                 409 "File already uploading" while the .part exists
                                 507 when the copy fails (a cut-off chunked body)
                                 Checks run in DRP's order: auth, content type,
                                 directory, upload in progress. Like DRP, a 409,
                                 a 400 or a 507 also removes an existing <path>
                                 (and the .part it wrote).
  HEAD   /api/v3/files/<path>    200 + X-DRP-SHA256SUM (hashed on every HEAD), 404
  GET    /api/v3/files/<path>    the bytes
  DELETE /api/v3/files/<path>    204, 404
  GET    /api/v3/users/<name>/token?ttl=&scope=&action=&specific=
                                 {"Token": "...", "Info": {...}}; a token never
                                 exceeds the user's own claims
  GET    /api/v3/info            ports

Authentication: `Authorization: Bearer <token>`, `Basic base64(user:pass)` or
`?token=`. No or malformed header: 401, empty body, `WWW-Authenticate:
dr-provision`. An unknown or expired token: 403, empty body. A token without
the claim: 403 {"Model","Key","Type":"AUTH","Messages":["Cannot access <url>",
"Requires: <scope> <action> <specific>"],"Code":403}. Claims are
{scope, action, specific}; each is `*`, one value or a comma list, and
`specific` matches exactly (no prefixes, no globs), as DRP's does. Files
claims: scope `files`, actions `post` (POST), `get` (HEAD, GET), `delete`,
specific `/<path>`. Tokens: scope `users`, action `token`, specific <name>.

Errors use DRP's error JSON: {"Model","Key","Type","Messages","Code"}.

Test-only additions, outside the contract:
  --config FILE   JSON: {"users": {name: {"password", "claims": [...]}},
                         "tokens": {token: {"user", "claims": [...]}},
                         "faults": [{"kind": "reset"|"500"|"stall"|"lose-answer"|"500-hold",
                                     "method": "POST", "path": "/images/x.tgz",
                                     "times": N, "after": BYTES, "seconds": S}]}
  --log FILE      one JSON line per request: method, path, status, request
                  headers that matter (Content-Length, Transfer-Encoding,
                  Expect, Content-Type), auth kind (never the credential),
                  bytes received, start time (the log is sorted by it)
  --tls CERT KEY  serve HTTPS
Prints the port on stdout once listening; exits when stdin closes.
"""

import argparse
import base64
import hashlib
import http.server
import json
import os
import secrets
import socket
import ssl
import struct
import sys
import threading
import time
import urllib.parse

LOCK = threading.Lock()


class State:
    def __init__(self, root, config, log):
        self.root = root
        self.users = config.get("users", {})
        self.tokens = {
            t: {"user": v.get("user", ""), "claims": v["claims"], "exp": None}
            for t, v in config.get("tokens", {}).items()
        }
        self.faults = config.get("faults", [])
        self.log = log

    def fault(self, method, path):
        """The first matching fault with attempts left, used up by one."""
        with LOCK:
            for f in self.faults:
                if f.get("times", 1) <= 0:
                    continue
                if f.get("method", method) != method:
                    continue
                if f.get("path", path) != path:
                    continue
                f["times"] = f.get("times", 1) - 1
                return f
        return None

    def record(self, entry):
        if self.log:
            with LOCK, open(self.log, "a") as f:
                f.write(json.dumps(entry) + "\n")


def field_matches(claim_value, want):
    if claim_value == "*":
        return True
    return want in [v.strip() for v in claim_value.split(",")]


def claims_allow(claims, scope, action, specific):
    for c in claims:
        if (
            field_matches(c.get("scope", ""), scope)
            and field_matches(c.get("action", ""), action)
            and field_matches(c.get("specific", ""), specific)
        ):
            return True
    return False


def claim_within(user_claims, claim):
    """Whether every (scope, action, specific) a requested claim names is
    allowed by the user's own claims (`*` only within a `*`)."""
    for scope in claim["scope"].split(","):
        for action in claim["action"].split(","):
            for specific in claim["specific"].split(","):
                if not claims_allow(user_claims, scope.strip(), action.strip(), specific.strip()):
                    return False
    return True


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "dr-provision-contract/1.0"
    state: State = None

    def log_message(self, fmt, *args):  # quiet
        pass

    # --- responses -------------------------------------------------------

    def send(self, code, body=b"", headers=None, ctype="application/json"):
        self.entry["status"] = code
        # Logged before the answer goes out, so a client that reads the log
        # after its answer always finds the request there.
        self.flush_entry()
        try:
            self.send_response(code)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            if body:
                self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD" and body:
                self.wfile.write(body)
        except OSError:
            # The client is gone (e.g. killed mid-upload).
            self.close_connection = True

    def error_json(self, code, model, key, typ, *messages):
        body = json.dumps(
            {"Model": model, "Key": key, "Type": typ, "Messages": list(messages), "Code": code}
        ).encode()
        self.send(code, body)

    def reset(self):
        """Closes the connection with a TCP reset."""
        self.entry["status"] = "reset"
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.connection.close()

    # --- request parsing -------------------------------------------------

    def route(self):
        u = urllib.parse.urlsplit(self.path)
        return urllib.parse.unquote(u.path), urllib.parse.parse_qs(u.query)

    def authenticate(self):
        """The caller's claims, or None after answering 401/403."""
        _, query = self.route()
        h = self.headers.get("Authorization", "")
        kind, _, cred = h.partition(" ")
        if not h and "token" in query:
            kind, cred = "Bearer", query["token"][0]
            if ":" in cred:
                kind, cred = "Basic", base64.b64encode(cred.encode()).decode()
        self.entry["auth"] = kind or "none"
        if kind == "Bearer" and cred:
            t = self.state.tokens.get(cred)
            if t is None or (t["exp"] is not None and t["exp"] < time.time()):
                self.send(403)
                return None
            return t["claims"]
        if kind == "Basic" and cred:
            try:
                user, _, password = base64.b64decode(cred).decode().partition(":")
            except Exception:
                user, password = "", None
            u = self.state.users.get(user)
            if u is None or u.get("password") != password:
                self.send(403)
                return None
            return u.get("claims", [])
        self.send(401, headers={"WWW-Authenticate": "dr-provision"})
        return None

    def authorize(self, claims, scope, action, specific):
        if claims_allow(claims, scope, action, specific):
            return True
        self.error_json(
            403, "", "", "AUTH", f"Cannot access {self.route()[0]}", f"Requires: {scope} {action} {specific}"
        )
        return False

    def files_path(self):
        path, _ = self.route()
        prefix = "/api/v3/files/"
        if not path.startswith(prefix):
            return None
        rel = path[len(prefix):]
        if ".." in rel.split("/"):
            return None
        return "/" + rel

    def local(self, key):
        return os.path.join(self.state.root, key.lstrip("/"))

    def part(self, key):
        # DRP: path.Join(root, base, fmt.Sprintf(".%s.part", path.Clean(name)))
        # with name "/images/x.tgz": "./images/x.tgz.part".
        return self.local(key) + ".part"

    def drop_final(self, key):
        """DRP removes the existing file whenever an upload to it fails."""
        try:
            os.unlink(self.local(key))
        except FileNotFoundError:
            pass

    # --- checks done before a body is read -------------------------------

    def precheck(self):
        """Everything DRP decides before reading a POST body (auth, claim,
        path, type, an upload in progress). Answers and returns False if
        the request is refused."""
        self.entry = {
            "method": self.command,
            "path": self.route()[0],
            "content_length": self.headers.get("Content-Length"),
            "transfer_encoding": self.headers.get("Transfer-Encoding"),
            "expect": self.headers.get("Expect"),
            "content_type": self.headers.get("Content-Type"),
            "received": 0,
            "started": time.monotonic(),
        }
        self.checked = True
        key = self.files_path()
        if self.command != "POST" or key is None:
            return True
        f = self.state.fault("POST", key)
        if f and f["kind"] == "500":
            self.error_json(500, "files", key, "POST", "injected failure")
            self.close_connection = True
            return False
        if f:
            self.pending_fault = f
        claims = self.authenticate()
        if claims is None or not self.authorize(claims, "files", "post", key):
            self.close_connection = True
            return False
        ctype = self.headers.get("Content-Type", "")
        if ctype.split("; ")[0] not in ("application/octet-stream", "multipart/form-data"):
            self.error_json(400, "files", key, "POST", f"Want content-type application/octet-stream, not {ctype}")
            self.close_connection = True
            return False
        if key.endswith("/"):
            self.error_json(403, "files", key, "POST", "Cannot upload a directory")
            self.close_connection = True
            return False
        if os.path.exists(self.part(key)):
            self.drop_final(key)
            self.error_json(409, "files", key, "POST", "File already uploading")
            self.close_connection = True
            return False
        return True

    def handle_expect_100(self):
        if not self.precheck():
            return False
        return super().handle_expect_100()

    def handle_one_request(self):
        self.checked = False
        self.pending_fault = None
        self.entry = {}
        try:
            super().handle_one_request()
        finally:
            self.flush_entry()

    def flush_entry(self):
        if self.entry:
            self.state.record(self.entry)
            self.entry = {}

    # --- methods ---------------------------------------------------------

    def do_POST(self):
        if not self.checked and not self.precheck():
            return
        key = self.files_path()
        if key is None:
            self.error_json(404, "", self.route()[0], "API_ERROR", "no such route")
            return
        fault = self.pending_fault
        part = self.part(key)
        os.makedirs(os.path.dirname(part), exist_ok=True)
        try:
            fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            self.drop_final(key)
            self.error_json(409, "files", key, "POST", "File already uploading")
            self.close_connection = True
            return
        if fault and fault["kind"] == "500-hold":
            # Fails while its .part stays for a while, as a handler that is
            # still copying a dead connection's body does.
            threading.Timer(fault.get("seconds", 1.0), os.unlink, [part]).start()
            os.close(fd)
            self.error_json(500, "files", key, "POST", "injected failure")
            self.close_connection = True
            return
        received = 0
        ok = True
        limit = fault.get("after", 65536) if fault and fault["kind"] in ("reset", "stall") else None
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in self.body_chunks():
                    out.write(chunk)
                    received += len(chunk)
                    self.entry["received"] = received
                    if limit is not None and received >= limit:
                        if fault["kind"] == "reset":
                            raise ConnectionResetError("injected reset")
                        # Stalled mid-body with the .part in place; when
                        # the network comes back the client is long gone
                        # and the copy fails, as DRP's io.Copy would.
                        out.flush()
                        time.sleep(fault.get("seconds", 30))
                        raise ConnectionAbortedError("stalled")
        except ConnectionResetError:
            os.unlink(part)
            self.drop_final(key)
            self.reset()
            return
        except ConnectionAbortedError:
            os.unlink(part)
            self.drop_final(key)
            self.close_connection = True
            self.entry["status"] = "stalled"
            return
        except (OSError, ValueError) as e:
            ok = False
            why = str(e)
        if not ok:
            os.unlink(part)
            self.drop_final(key)
            self.error_json(507, "files", key, "POST", f"Failed to upload: {why}")
            self.close_connection = True
            return
        want = int(self.headers.get("Content-Length") or 0)
        if want > 0 and want != received:
            os.unlink(part)
            self.drop_final(key)
            self.error_json(400, "files", key, "POST", f"{want} bytes expected, but only {received} bytes received")
            return
        os.replace(part, self.local(key))
        if fault and fault["kind"] == "lose-answer":
            # Stored, but the answer never reaches the client.
            self.reset()
            return
        self.send(201, json.dumps({"Path": key, "Size": received}).encode())

    def body_chunks(self):
        """The request body: Content-Length bytes or a chunked body. A body
        cut short raises ValueError (nothing is stored)."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            while True:
                line = self.rfile.readline(1024)
                if not line.endswith(b"\r\n"):
                    raise ValueError("chunked body cut off")
                size = int(line.split(b";")[0].strip(), 16)
                if size == 0:
                    # Trailers, then the empty line.
                    while True:
                        t = self.rfile.readline(1024)
                        if t in (b"\r\n", b"\n"):
                            return
                        if not t:
                            raise ValueError("chunked body cut off")
                left = size
                while left:
                    data = self.rfile.read(min(left, 1 << 20))
                    if not data:
                        raise ValueError("chunked body cut off")
                    left -= len(data)
                    yield data
                if self.rfile.readline(1024) != b"\r\n":
                    raise ValueError("chunked body cut off")
        else:
            left = int(self.headers.get("Content-Length") or 0)
            while left:
                data = self.rfile.read(min(left, 1 << 20))
                if not data:
                    return  # short: the size check answers
                left -= len(data)
                yield data

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        self.precheck()
        path, query = self.route()
        if path == "/api/v3/info":
            if self.authenticate() is None:
                return
            port = self.server.server_address[1]
            self.send(200, json.dumps({"api_port": port, "file_port": port, "version": "contract"}).encode())
            return
        if path.startswith("/api/v3/users/") and path.endswith("/token"):
            return self.token(path[len("/api/v3/users/"):-len("/token")], query)
        key = self.files_path()
        if key is None:
            self.error_json(404, "", path, "API_ERROR", "no such route")
            return
        fault = self.state.fault(self.command, key)
        if fault and fault["kind"] == "500":
            self.error_json(500, "files", key, self.command, "injected failure")
            return
        claims = self.authenticate()
        if claims is None or not self.authorize(claims, "files", "get", key):
            return
        p = self.local(key)
        if not os.path.isfile(p):
            self.error_json(404, "files", key, self.command, f"Unable to find file {key}")
            return
        with open(p, "rb") as f:
            data = f.read()
        headers = {"X-DRP-SHA256SUM": hashlib.sha256(data).hexdigest()}
        self.send(200, data, headers, ctype="application/octet-stream")

    def do_DELETE(self):
        self.precheck()
        key = self.files_path()
        if key is None:
            self.error_json(404, "", self.route()[0], "API_ERROR", "no such route")
            return
        claims = self.authenticate()
        if claims is None or not self.authorize(claims, "files", "delete", key):
            return
        p = self.local(key)
        if not os.path.isfile(p):
            self.error_json(404, "files", key, "DELETE", f"Unable to find file {key}")
            return
        os.unlink(p)
        self.send(204)

    def token(self, name, query):
        claims = self.authenticate()
        if claims is None or not self.authorize(claims, "users", "token", name):
            return
        user = self.state.users.get(name)
        if user is None:
            self.error_json(404, "users", name, "API_ERROR", f"Not Found: users/{name}")
            return
        q = {k: v[0] for k, v in query.items()}
        try:
            ttl = int(q.get("ttl", "3600"))
        except ValueError:
            self.error_json(400, "users", name, "API_ERROR", f"ttl: invalid integer {q['ttl']!r}")
            return
        claim = {k: q.get(k, "*") for k in ("scope", "action", "specific")}
        if not claim_within(user.get("claims", []), claim):
            self.error_json(403, "users", name, "AUTH", "Requested claims exceed the user's roles")
            return
        token = secrets.token_urlsafe(32)
        with LOCK:
            self.state.tokens[token] = {"user": name, "claims": [claim], "exp": time.time() + ttl}
        self.entry["minted"] = claim
        self.entry["ttl"] = ttl
        info = {"api_port": self.server.server_address[1]}
        self.send(200, json.dumps({"Token": token, "Info": info}).encode())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True, help="the files store")
    ap.add_argument("--config", help="users, tokens, faults (JSON)")
    ap.add_argument("--log", help="request log (JSON lines)")
    ap.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    a = ap.parse_args()
    config = json.load(open(a.config)) if a.config else {}
    Handler.state = State(a.dir, config, a.log)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    if a.tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(a.tls[0], a.tls[1])
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(server.server_address[1], flush=True)
    # Live as long as the test that started us.
    sys.stdin.read()
    server.shutdown()


if __name__ == "__main__":
    main()

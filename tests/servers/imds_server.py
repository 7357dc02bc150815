#!/usr/bin/env python3
"""A local stand-in for the EC2 instance metadata service, IMDSv2 only.

    imds_server.py KEY SECRET SESSION_TOKEN [ROLE]

Listens on 127.0.0.1 (a free port), prints {"endpoint": URL} on one line,
then serves what goldcap asks of the real service (as documented by AWS,
"Use the Instance Metadata Service to access instance metadata" and
"Retrieve security credentials from instance metadata"):

  PUT /latest/api/token                        needs X-aws-ec2-metadata-token-ttl-seconds
                                               (1..21600): a session token; 400 otherwise
  GET /latest/meta-data/iam/security-credentials/        the role name
  GET /latest/meta-data/iam/security-credentials/<role>  {"Code": "Success",
                                               "AccessKeyId", "SecretAccessKey", "Token",
                                               "Expiration", ...}
  Every GET without a valid X-aws-ec2-metadata-token: 401 (IMDSv1 is off).

Each request is logged to stderr as a JSON line (method, path, whether it
carried the session token). Stops when stdin closes.
"""
import json
import secrets
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

KEY, SECRET, TOKEN = sys.argv[1], sys.argv[2], sys.argv[3]
ROLE = sys.argv[4] if len(sys.argv) > 4 else "goldcap-builder"
SESSIONS = set()


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, status, body, ctype="text/plain"):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log(self, authed):
        print(json.dumps({"method": self.command, "path": self.path, "session": authed}),
              file=sys.stderr, flush=True)

    def do_PUT(self):
        self.log(False)
        if self.path != "/latest/api/token":
            return self.reply(404, "not found")
        try:
            ttl = int(self.headers.get("X-aws-ec2-metadata-token-ttl-seconds", ""))
        except ValueError:
            return self.reply(400, "missing or bad X-aws-ec2-metadata-token-ttl-seconds")
        if not 1 <= ttl <= 21600:
            return self.reply(400, "ttl out of range")
        session = secrets.token_urlsafe(24)
        SESSIONS.add(session)
        self.reply(200, session)

    def do_GET(self):
        authed = self.headers.get("X-aws-ec2-metadata-token", "") in SESSIONS
        self.log(authed)
        if not authed:
            return self.reply(401, "")
        base = "/latest/meta-data/iam/security-credentials/"
        if self.path == base:
            return self.reply(200, ROLE)
        if self.path == base + ROLE:
            return self.reply(200, json.dumps({
                "Code": "Success",
                "LastUpdated": "2026-12-02T12:00:00Z",
                "Type": "AWS-HMAC",
                "AccessKeyId": KEY,
                "SecretAccessKey": SECRET,
                "Token": TOKEN,
                "Expiration": "2099-01-01T00:00:00Z",
            }), "application/json")
        self.reply(404, "not found")


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(json.dumps({"endpoint": "http://127.0.0.1:%d" % server.server_address[1]}), flush=True)
    sys.stdin.read()
    server.shutdown()


if __name__ == "__main__":
    main()

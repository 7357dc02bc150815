#!/usr/bin/env python3
"""A real S3-compatible server for goldcap's upload tests: s3s-fs (the
crates.io `s3s-fs` binary, an S3 implementation over a directory that
checks SigV4 signatures in headers and presigned URLs), on 127.0.0.1,
plus an optional fault-injecting proxy in front of it. scripts/install-deps
installs s3s-fs into target/test-tools and boto3 into target/test-venv;
this script runs with that venv's python.

  s3_server.py serve --bin S3S_FS --data DIR [--faults JSON]
      Starts s3s-fs on a free port with a fresh access key and secret,
      creates the bucket `goldcap-test` and prints one JSON line:
      {"endpoint": URL (the proxy when faults are given), "direct": URL,
       "key": ..., "secret": ..., "bucket": ...}
      Objects are plain files under DIR/<bucket>/<key>; a multipart upload
      in progress leaves DIR/.upload-<id>.json and its parts.
      Faults: [{"kind": "500"|"reset"|"stall", "method": "PUT",
                "query": "partNumber=2", "times": N, "seconds": S}];
      a request matching method and query substring gets the fault
      instead of being forwarded, `times` times. Exits (stopping s3s-fs)
      when stdin closes.

Checks that talk to the server with boto3, independently of goldcap
(credentials from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, endpoint from
AWS_ENDPOINT_URL, as for goldcap):

  s3_server.py get BUCKET KEY FILE     downloads an object; prints its
                                       ETag, size and user metadata (JSON)
  s3_server.py put BUCKET KEY FILE     uploads FILE as an object (no
                                       metadata)
  s3_server.py keys BUCKET             object keys (JSON)
  s3_server.py presign-put BUCKET KEY  a presigned PUT URL (boto3's signer)
"""

import json
import os
import secrets
import socket
import struct
import sys
import threading
import time

BUCKET = "goldcap-test"


def client(endpoint=None, key=None, secret=None, service="s3"):
    import boto3
    from botocore.config import Config

    return boto3.client(
        service,
        endpoint_url=endpoint or os.environ["AWS_ENDPOINT_URL"],
        region_name="us-east-1",
        aws_access_key_id=key or os.environ["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=secret or os.environ["AWS_SECRET_ACCESS_KEY"],
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}, signature_version="s3v4"),
    )


def serve(binary, data, faults):
    import re
    import subprocess

    key = "AKIA" + secrets.token_hex(8).upper()
    # Hex: a value starting with "-" would be taken for an option.
    secret = secrets.token_hex(20)
    env = dict(os.environ, RUST_LOG="info", NO_COLOR="1")

    def die_with_parent():
        # PR_SET_PDEATHSIG: s3s-fs gets SIGTERM if this wrapper is killed.
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)

    proc = subprocess.Popen(
        [binary, "--host", "127.0.0.1", "--port", "0", "--access-key", key, "--secret-key", secret, data],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        text=True,
        preexec_fn=die_with_parent,
    )
    port = None
    for line in proc.stdout:
        m = re.search(r"server is running at http://127\.0\.0\.1:(\d+)", line)
        if m:
            port = int(m.group(1))
            break
    if port is None:
        sys.exit(f"s3s-fs did not start (exit {proc.wait()})")
    # Keep draining its log so it never blocks on a full pipe.
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
    direct = f"http://127.0.0.1:{port}"
    client(direct, key, secret).create_bucket(Bucket=BUCKET)
    endpoint = start_proxy(port, faults) if faults else direct
    print(json.dumps({"endpoint": endpoint, "direct": direct, "key": key, "secret": secret, "bucket": BUCKET}), flush=True)
    try:
        sys.stdin.read()
    finally:
        proc.terminate()
        proc.wait()


def start_proxy(upstream, faults):
    """A forwarding proxy that injects faults. Headers (Host included) are
    passed unchanged, so SigV4 signatures still verify upstream."""
    import http.client
    import http.server

    lock = threading.Lock()

    def take(method, path):
        with lock:
            for f in faults:
                if f.get("times", 1) > 0 and f.get("method", method) == method and f.get("query", "") in path:
                    f["times"] = f.get("times", 1) - 1
                    return f
        return None

    class Proxy(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def body(self):
            n = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(n) if n else b""

        def handle_any(self):
            f = take(self.command, self.path)
            if f and f["kind"] == "reset":
                self.rfile.read(min(int(self.headers.get("Content-Length") or 0), 65536))
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True
                self.connection.close()
                return
            if f and f["kind"] == "stall":
                time.sleep(f.get("seconds", 30))
                self.close_connection = True
                return
            data = self.body()
            if f and f["kind"] == "500":
                b = b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>InternalError</Code><Message>injected</Message></Error>"
                self.send_response(500)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(b)))
                self.end_headers()
                self.wfile.write(b)
                return
            conn = http.client.HTTPConnection("127.0.0.1", upstream, timeout=60)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "expect")}
            conn.request(self.command, self.path, body=data, headers=headers)
            r = conn.getresponse()
            payload = r.read()
            self.send_response(r.status)
            for k, v in r.getheaders():
                if k.lower() not in ("content-length", "transfer-encoding", "connection", "server", "date"):
                    self.send_header(k, v)
            length = r.getheader("Content-Length") if self.command == "HEAD" else None
            self.send_header("Content-Length", length or str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)
            conn.close()

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = handle_any

    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    proxy.daemon_threads = True
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{proxy.server_address[1]}"


def main():
    cmd = sys.argv[1]
    if cmd == "serve":
        arg = lambda name: sys.argv[sys.argv.index(name) + 1] if name in sys.argv else None
        serve(arg("--bin"), arg("--data"), json.loads(arg("--faults") or "[]"))
    elif cmd == "get":
        c = client()
        r = c.get_object(Bucket=sys.argv[2], Key=sys.argv[3])
        with open(sys.argv[4], "wb") as f:
            for chunk in r["Body"].iter_chunks(1 << 20):
                f.write(chunk)
        print(json.dumps({"etag": r["ETag"].strip('"'), "size": r["ContentLength"],
                          "metadata": r.get("Metadata", {})}))
    elif cmd == "put":
        with open(sys.argv[4], "rb") as f:
            client().put_object(Bucket=sys.argv[2], Key=sys.argv[3], Body=f.read())
    elif cmd == "keys":
        r = client().list_objects_v2(Bucket=sys.argv[2])
        print(json.dumps(sorted(o["Key"] for o in r.get("Contents", []))))
    elif cmd == "presign-put":
        print(client().generate_presigned_url("put_object", Params={"Bucket": sys.argv[2], "Key": sys.argv[3]}, ExpiresIn=600))
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()

"""A webhook receiver written from docs/SPEC.md alone, with Python's own HMAC: it verifies
each delivery's Strife-Signature over the raw body (tolerance 300 s), answers 200 when it
holds and 400 when not, and prints one JSON line per delivery (verified, header, body).
The first line printed is the port it listens on (127.0.0.1, chosen by the system)."""

import hashlib
import hmac
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

SECRET = os.environ["STRIFE_WEBHOOK_SECRET"].encode()
TOLERANCE_SECS = 300


def verified(header, body):
    timestamp, signatures = None, []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            timestamp = value
        elif key == "v1":
            signatures.append(value)
    if timestamp is None or not timestamp.isdigit() or not signatures:
        return False
    if abs(time.time() - int(timestamp)) > TOLERANCE_SECS:
        return False
    expected = hmac.new(SECRET, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return any(hmac.compare_digest(expected, signature) for signature in signatures)


class Receiver(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        header = self.headers.get("Strife-Signature", "")
        ok = verified(header, body)
        print(json.dumps({"verified": ok, "path": self.path, "header": header,
                          "body": body.decode("utf-8", "replace")}), flush=True)
        self.send_response(200 if ok else 400)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


server = HTTPServer(("127.0.0.1", 0), Receiver)
print(json.dumps({"port": server.server_address[1]}), flush=True)
sys.stdout.flush()
server.serve_forever()

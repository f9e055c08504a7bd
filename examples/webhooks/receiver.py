#!/usr/bin/env python3
"""A webhook receiver for Switchboard: verifies each request as Standard Webhooks specifies,
drops repeats of an id it has seen (delivery is at least once), and prints every event.

    SWITCHBOARD_SIGNING_SECRETS=whsec_... python3 examples/webhooks/receiver.py [port]

Only the standard library. See docs/webhooks.md.
"""
import base64
import hashlib
import hmac
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

SECRETS = [s for s in os.environ["SWITCHBOARD_SIGNING_SECRETS"].split(",") if s]
# Refuse requests signed longer ago than this: a replayed request is refused.
TOLERANCE_SECS = 300
# Ids already handled. A real backend keeps them in its database (a unique key) for longer than
# SWITCHBOARD_WEBHOOK_RETRY_FOR_MS; this example keeps them in memory.
seen = set()


def verify(headers, body):
    timestamp = headers.get("webhook-timestamp", "")
    if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > TOLERANCE_SECS:
        return False
    signed = f"{headers.get('webhook-id', '')}.{timestamp}.".encode() + body
    given = [s.removeprefix("v1,") for s in headers.get("webhook-signature", "").split(" ")]
    for secret in SECRETS:
        key = base64.b64decode(secret.removeprefix("whsec_"))
        expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        if any(hmac.compare_digest(sig, expected) for sig in given):
            return True
    return False


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        if not verify(self.headers, body):
            self.send_response(401)
            self.end_headers()
            return
        event_id = self.headers["webhook-id"]
        if event_id not in seen:
            seen.add(event_id)
            event = json.loads(body)
            print(event["type"], event_id, json.dumps(event["data"]), flush=True)
        # Any 2xx means delivered; anything else, or no answer in time, is retried.
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 9000
    HTTPServer(("127.0.0.1", port), Receiver).serve_forever()

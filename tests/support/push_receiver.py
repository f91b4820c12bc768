"""A stand-in for the notification gateway: HTTPS on port 8443, one JSON line per POST.

Runs in a container on a docker network the test created (python3 of the relay
image), with its certificate signed by a CA the test made. The answer depends
on the token: ``openpgp:gone...`` gets 410 Gone (an invalid token),
``openpgp:slow...`` is answered only after 30 seconds, everything else 200.

    python3 push_receiver.py CERT KEY
"""

import http.server
import json
import ssl
import sys
import time


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        received = time.time()
        body = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
        status = 410 if body.startswith("openpgp:gone") else 200
        print(json.dumps({"t": received, "path": self.path, "body": body, "status": status,
                          "content_type": self.headers.get("Content-Type")}), flush=True)
        if body.startswith("openpgp:slow"):
            time.sleep(30)
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def main() -> None:
    cert, key = sys.argv[1:3]
    server = http.server.ThreadingHTTPServer(("0.0.0.0", 8443), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print(json.dumps({"ready": time.time()}), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()

"""A mail domain's server that is wrong in one way, for `relayctl why` tests
(run inside the test network's tools container by tests/support/probepeers.py).

    python3 probe_peer.py --cert C --key K [--https] [--smtp]

--https: a plain web server on 443 (every path 404, an HTML page: no /mxdeliv).
--smtp:  port 25 that greets, offers STARTTLS and presents the certificate, and
         takes no mail (451 to MAIL). Without it, port 25 is closed.
"""

import argparse
import socketserver
import ssl
import threading


class Web(socketserver.StreamRequestHandler):
    def handle(self):
        try:
            tls = self.server.ctx.wrap_socket(self.request, server_side=True)
        except (OSError, ssl.SSLError):
            return
        with tls:
            f = tls.makefile("rb")
            line = f.readline(4096)
            while f.readline(4096).strip():
                pass
            body = b"<html><body><h1>404 Not Found</h1></body></html>\n"
            if line:
                tls.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Type: text/html\r\n"
                            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))


class SMTP(socketserver.StreamRequestHandler):
    def handle(self):
        sock, name = self.request, self.server.name
        sock.sendall(b"220 %s ESMTP probe peer\r\n" % name)
        f, secure = sock.makefile("rb"), False
        while True:
            line = f.readline(1024)
            if not line:
                return
            verb = line[:4].upper()
            if verb in (b"EHLO", b"HELO"):
                sock.sendall(b"250 %s\r\n" % name if secure else
                             b"250-%s\r\n250-PIPELINING\r\n250 STARTTLS\r\n" % name)
            elif verb == b"STAR" and not secure:
                sock.sendall(b"220 2.0.0 Ready to start TLS\r\n")
                try:
                    sock = self.server.ctx.wrap_socket(sock, server_side=True)
                except (OSError, ssl.SSLError):
                    return
                f, secure = sock.makefile("rb"), True
            elif verb == b"QUIT":
                sock.sendall(b"221 2.0.0 Bye\r\n")
                return
            elif verb == b"MAIL":
                sock.sendall(b"451 4.3.0 This test peer takes no mail\r\n")
            else:
                sock.sendall(b"502 5.5.2 Not here\r\n")


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--name", default="probe-peer")
    parser.add_argument("--https", action="store_true")
    parser.add_argument("--smtp", action="store_true")
    args = parser.parse_args()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.cert, args.key)
    servers = []
    for wanted, port, handler in ((args.https, 443, Web), (args.smtp, 25, SMTP)):
        if wanted:
            server = Server(("0.0.0.0", port), handler)
            server.ctx, server.name = ctx, args.name.encode()
            servers.append(server)
    threads = [threading.Thread(target=s.serve_forever) for s in servers]
    for t in threads:
        t.start()
    print("probe peer ready", flush=True)
    for t in threads:
        t.join()


if __name__ == "__main__":
    main()

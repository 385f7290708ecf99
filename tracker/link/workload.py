#!/usr/bin/env python3
"""Drives a running tracker through what it does in service (used by profile.sh to find the code it runs).

usage: workload.py HTTP_ADDR UDP_ADDR
HTTP: announces over a connection each and kept alive (pipelined), the dictionary form, scrapes (one, many,
all), /stats in JSON and HTML, a 404, bad requests; UDP (BEP 15): connect, announce, scrape, bad packets.
"""
import os
import socket
import struct
import sys
import time
import urllib.parse


def addr(s):
    host, port = s.rsplit(":", 1)
    return host, int(port)


def announce_target(i, p, extra=""):
    h = urllib.parse.quote_from_bytes(i.to_bytes(4, "big") * 5)
    pid = urllib.parse.quote_from_bytes(b"-PR0001-" + p.to_bytes(12, "big"))
    left = 0 if p % 4 == 0 else 1000
    return (f"/announce?info_hash={h}&peer_id={pid}&port={10000 + p}&uploaded=0&downloaded=0"
            f"&left={left}&event=started&numwant=50{extra}")


def http_once(a, target, keep=False):
    s = socket.create_connection(a, timeout=30)
    conn = "keep-alive" if keep else "close"
    s.sendall(f"GET {target} HTTP/1.1\r\nHost: t\r\nConnection: {conn}\r\n\r\n".encode())
    data = b""
    while True:
        b = s.recv(65536)
        if not b:
            break
        data += b
    s.close()
    return data


def read_reply(c):
    """Reads one HTTP reply with a Content-Length body from a kept-alive connection."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += c.recv(65536)
    head, body = data.split(b"\r\n\r\n", 1)
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    while len(body) < length:
        body += c.recv(65536)


def http_raw(a, payload):
    s = socket.create_connection(a, timeout=30)
    s.sendall(payload)
    s.shutdown(socket.SHUT_WR)
    while s.recv(65536):
        pass
    s.close()


def main():
    h, u = addr(sys.argv[1]), addr(sys.argv[2])
    for i in range(200):
        http_once(h, announce_target(i % 50, i))
    # Keep-alive, pipelined, the last one closing.
    s = socket.create_connection(h, timeout=30)
    reqs = b"".join(
        f"GET {announce_target(i % 50, i + 1000)} HTTP/1.1\r\nHost: t\r\n\r\n".encode() for i in range(100))
    s.sendall(reqs + f"GET {announce_target(1, 1)} HTTP/1.1\r\nConnection: close\r\n\r\n".encode())
    while s.recv(65536):
        pass
    s.close()
    # Keep-alive the way load generators do it: many connections open, one request at a time on each.
    conns = [socket.create_connection(h, timeout=30) for _ in range(16)]
    for r in range(20):
        for k, c in enumerate(conns):
            c.sendall(f"GET {announce_target(k, 2000 + r)} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        for c in conns:
            read_reply(c)
    for c in conns:
        c.close()
    # A request head in two segments, the second after a pause.
    s = socket.create_connection(h, timeout=30)
    s.sendall(b"GET " + announce_target(4, 4).encode())
    time.sleep(0.05)
    s.sendall(b" HTTP/1.1\r\nConnection: close\r\n\r\n")
    while s.recv(65536):
        pass
    s.close()
    http_once(h, announce_target(3, 7, "&compact=0"))
    http_once(h, announce_target(3, 8, "&compact=0&no_peer_id=1"))
    http_once(h, announce_target(3, 9, "&event=completed"))
    http_once(h, announce_target(3, 9, "&event=stopped"))
    http_once(h, announce_target(3, 10, "&numwant=500&key=abcd"))
    http_once(h, announce_target(3, 11, "&ipv6=%5B2001%3Adb8%3A%3A1%5D%3A6881"))
    hs = "&".join("info_hash=" + urllib.parse.quote_from_bytes(i.to_bytes(4, "big") * 5) for i in range(5))
    http_once(h, "/scrape?" + hs)
    http_once(h, "/scrape")
    http_once(h, "/stats")
    http_once(h, "/stats?format=html")
    http_once(h, "/nothing")
    http_once(h, "/announce?info_hash=short")
    http_raw(h, b"POST /announce HTTP/1.1\r\n\r\n")
    http_raw(h, b"\x00\x01 not http\r\n\r\n")
    http_raw(h, b"GET /announce?" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n")

    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(10)
    s.sendto(struct.pack(">QII", 0x41727101980, 0, 1), u)
    _, _, conn = struct.unpack(">IIQ", s.recv(2048))
    for i in range(200):
        ih = (i % 50).to_bytes(4, "big") * 5
        pid = b"-PU0001-" + i.to_bytes(12, "big")
        pkt = struct.pack(">QII20s20sQQQIIIiH", conn, 1, i, ih, pid, 0, 1000 if i % 4 else 0, 0,
                          2 if i % 7 == 0 else 0, 0, 0, -1, 20000 + i)
        s.sendto(pkt, u)
        s.recv(2048)
    # A window of announces in flight, as the benchmark's load generator keeps (batched receives).
    for i in range(128):
        ih = (i % 50).to_bytes(4, "big") * 5
        s.sendto(struct.pack(">QII20s20sQQQIIIiH", conn, 1, i, ih, b"-PW0001-" + i.to_bytes(12, "big"),
                             0, 1000, 0, 0, 0, 0, -1, 30000 + i), u)
    for i in range(128):
        s.recv(2048)
    s.sendto(struct.pack(">QII", conn, 2, 7) + b"".join(i.to_bytes(4, "big") * 5 for i in range(3)), u)
    s.recv(2048)
    s.sendto(struct.pack(">QII", 12345, 1, 8) + os.urandom(82), u)  # bad connection id
    s.recv(2048)
    s.sendto(b"\x00" * 4, u)  # too short: dropped


if __name__ == "__main__":
    main()

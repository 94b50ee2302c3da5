#!/usr/bin/env python3
"""Traffic for the live NFQUEUE tests and bench (client - router - server namespaces).

  traffic.py serve                       HTTP on :8080 (v4+v6), UDP echo on :9999; prints "ready"
  traffic.py client [--mb N] [--short K] one JSON object: transfers, short connections, pings,
                                         UDP request/response, refused port, ICMP port unreachable
  traffic.py craft                       crafted invalid packets to a phantom address (scapy)
  traffic.py bulk --mb N [--conns K]     K parallel downloads of N MB; prints {"bytes", "seconds"}
  traffic.py rtt --count N               UDP request/response round trips; prints {"rtt_us": [...]}
"""
import hashlib, http.server, json, os, select, socket, socketserver, struct, sys, threading, time

SERVER4, SERVER6 = '10.200.2.2', 'fd00:200:0:2::2'
PORT, UDP_PORT, CLOSED_PORT = 8080, 9999, 81


def pattern(n):
    block = hashlib.sha256(b'conntrack-sab').digest() * 2048  # 64 KiB
    out = bytearray()
    while len(out) < n:
        out += block[: n - len(out)]
    return bytes(out)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'

    def log_message(self, *a):
        pass

    def do_GET(self):
        n = int(self.path.rsplit('/', 1)[-1] or 0)
        body = pattern(n)
        self.send_response(200)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        n = int(self.headers.get('Content-Length', 0))
        h = hashlib.sha256()
        left = n
        while left > 0:
            chunk = self.rfile.read(min(left, 65536))
            if not chunk:
                break
            h.update(chunk)
            left -= len(chunk)
        body = json.dumps({'len': n - left, 'sha256': h.hexdigest()}).encode()
        self.send_response(200)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class Server6(socketserver.ThreadingMixIn, http.server.HTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True
    allow_reuse_address = True

    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def serve():
    httpd = Server6(('::', PORT), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    u.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    u.bind(('::', UDP_PORT))
    print('ready', flush=True)
    while True:
        data, addr = u.recvfrom(65535)
        u.sendto(data, addr)


def http_request(host, method, path, body=b'', src=None):
    fam = socket.AF_INET6 if ':' in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(10)
    if src:
        s.bind((src, 0))
    s.connect((host, PORT))
    req = f'{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n'.encode()
    s.sendall(req)
    if body:
        s.sendall(body)
    data = bytearray()
    while True:
        chunk = s.recv(1 << 16)
        if not chunk:
            break
        data += chunk
    s.close()
    head, _, payload = bytes(data).partition(b'\r\n\r\n')
    return head, payload


def checksum(b):
    if len(b) % 2:
        b += b'\0'
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff


def ping(host, count=3):
    v6 = ':' in host
    s = socket.socket(socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_RAW,
                      socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP)
    ok = 0
    ident = os.getpid() & 0xffff
    for seq in range(count):
        typ = 128 if v6 else 8
        hdr = struct.pack('!BBHHH', typ, 0, 0, ident, seq) + b'ping-payload'
        if not v6:
            hdr = hdr[:2] + struct.pack('!H', checksum(hdr)) + hdr[4:]
        s.sendto(hdr, (host, 0))
        end = time.time() + 2
        while time.time() < end:
            r, _, _ = select.select([s], [], [], end - time.time())
            if not r:
                break
            data = s.recv(2048)
            icmp = data if v6 else data[(data[0] & 15) * 4:]
            if icmp[0] == (129 if v6 else 0) and struct.unpack('!H', icmp[4:6])[0] == ident:
                ok += 1
                break
    s.close()
    return ok


def udp_rr(host, n=3):
    s = socket.socket(socket.AF_INET6 if ':' in host else socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(2)
    got = 0
    for i in range(n):
        msg = f'hello {i}'.encode()
        s.sendto(msg, (host, UDP_PORT))
        try:
            data, _ = s.recvfrom(2048)
            got += data == msg
        except socket.timeout:
            pass
    s.close()
    return got


def refused(host):
    s = socket.socket(socket.AF_INET6 if ':' in host else socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(3)
    try:
        s.connect((host, CLOSED_PORT))
        return 'connected'
    except ConnectionRefusedError:
        return 'refused'
    except OSError as e:
        return f'error {e}'
    finally:
        s.close()


def port_unreachable(host):
    s = socket.socket(socket.AF_INET6 if ':' in host else socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(3)
    s.connect((host, CLOSED_PORT))
    s.send(b'anyone?')
    try:
        s.recv(100)
        return 'answered'
    except ConnectionRefusedError:
        return 'unreachable'  # the ICMP port unreachable came back
    except socket.timeout:
        return 'timeout'
    finally:
        s.close()


def client(mb, short):
    n = int(mb * 1048576)
    out = {}
    t = time.time()
    head, body = http_request(SERVER4, 'GET', f'/bytes/{n}')
    out['download'] = {'ok': body == pattern(n), 'bytes': len(body)}
    up = pattern(n)
    head, body = http_request(SERVER6, 'POST', '/upload', up)
    try:
        r = json.loads(body)
    except ValueError:
        r = {}
    out['upload'] = {'ok': r.get('len') == n and r.get('sha256') == hashlib.sha256(up).hexdigest(), 'bytes': r.get('len')}
    okc = 0
    for i in range(short):
        host = SERVER4 if i % 2 == 0 else SERVER6
        _, body = http_request(host, 'GET', '/bytes/100')
        okc += body == pattern(100)
    out['short'] = {'ok': okc, 'of': short}
    out['ping'] = {'v4': ping(SERVER4), 'v6': ping(SERVER6)}
    out['udp'] = {'v4': udp_rr(SERVER4), 'v6': udp_rr(SERVER6)}
    out['refused'] = {'v4': refused(SERVER4), 'v6': refused(SERVER6)}
    out['unreachable'] = {'v4': port_unreachable(SERVER4), 'v6': port_unreachable(SERVER6)}
    out['seconds'] = round(time.time() - t, 3)
    print(json.dumps(out), flush=True)


def craft():
    from scapy.all import IP, TCP, UDP, ICMP, send, conf  # noqa
    conf.verb = 0
    src, dst = '10.200.1.10', '10.200.2.10'
    pkts = [
        IP(src=src, dst=dst) / TCP(sport=31337, dport=80, flags='S', chksum=0x1234),      # bad checksum
        IP(src=src, dst=dst) / TCP(sport=31337, dport=80, flags='SF'),                     # SYN+FIN
        IP(src=src, dst=dst) / TCP(sport=31337, dport=80, flags='S', dataofs=2),           # header too short
        IP(src=src, dst=dst) / UDP(sport=31337, dport=53, chksum=0x4321) / b'bad sum',     # bad checksum
        IP(src=src, dst=dst) / ICMP(type=3, code=3) / IP(src=dst, dst=src) / UDP(sport=53, dport=31337),  # error for no connection
    ]
    for p in pkts:
        send(p)
    print(json.dumps({'sent': len(pkts)}), flush=True)


def bulk(mb, conns):
    n = int(mb * 1048576)
    res = [0] * conns

    errors = []

    def one(i):
        try:
            _, body = http_request(SERVER4, 'GET', f'/bytes/{n}', src=f'10.200.1.{2 + i % 5}')
            res[i] = len(body)
        except OSError as e:
            errors.append(str(e))
    t = time.time()
    th = [threading.Thread(target=one, args=(i,)) for i in range(conns)]
    for x in th:
        x.start()
    for x in th:
        x.join()
    print(json.dumps({'bytes': sum(res), 'expected': n * conns, 'seconds': time.time() - t, 'errors': errors}), flush=True)


def rtt(count):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(1)
    out = []
    for i in range(count):
        t = time.perf_counter_ns()
        s.sendto(b'x' * 32, (SERVER4, UDP_PORT))
        try:
            s.recvfrom(100)
            out.append((time.perf_counter_ns() - t) / 1000)
        except socket.timeout:
            pass
    print(json.dumps({'rtt_us': out}), flush=True)


if __name__ == '__main__':
    a = sys.argv[1:]
    def opt(name, default):
        return float(a[a.index(name) + 1]) if name in a else default
    if a[0] == 'serve':
        serve()
    elif a[0] == 'client':
        client(opt('--mb', 4), int(opt('--short', 20)))
    elif a[0] == 'craft':
        craft()
    elif a[0] == 'bulk':
        bulk(opt('--mb', 20), int(opt('--conns', 1)))
    elif a[0] == 'rtt':
        rtt(int(opt('--count', 1000)))

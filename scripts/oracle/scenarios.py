"""The kernel-oracle scenarios. Each function generates one fixture's traffic.

Conventions: every scenario calls begin_capture() before the traffic that is recorded.
Crafted flows use the "phantom" addresses PC4/PS4/PC6/PS6 (owned by no host stack, so nothing
answers them); real-socket flows use the client/server addresses C4/S4/C6/S6.
"""
from traffic import (SCENARIOS, SENT, netns, C4, C6, GAP, ipc, PC4, PC6, PS4, PS6, S4, S6, S, Tcp, TcpServer, Wire, begin_capture,
                     echo_handler, linger0, recv_all, recv_exact, scenario, settle, sock_in, tcp_connect,
                     thread, udp_sock)
import socket
import struct
import time

# ==========================================================================================
# TCP, real sockets


@scenario("tcp_basic_v4",
          "Real TCP connections over IPv4: (1) request/response, client closes first (FIN "
          "handshake), client ends in TIME_WAIT; (2) server sends data and closes first; "
          "(3) 20 KB each way then client close.")
def tcp_basic_v4():
    def handler1(conn):
        d = recv_exact(conn, 5)
        conn.sendall(b"world" + d)
        # wait for the client's FIN, then close
        recv_all(conn)
        time.sleep(0.1)
        conn.close()

    def handler2(conn):
        conn.sendall(b"server speaks first and closes\n")
        time.sleep(0.1)
        conn.close()

    def handler3(conn):
        d = recv_exact(conn, 20000)
        conn.sendall(d)
        recv_all(conn)
        conn.close()

    srv1 = TcpServer(S4, 5001, handler1)
    srv2 = TcpServer(S4, 5002, handler2)
    srv3 = TcpServer(S4, 5003, handler3)
    begin_capture()
    s = tcp_connect(S4, 5001, sport=41001)
    s.sendall(b"hello")
    recv_exact(s, 10)
    time.sleep(0.1)
    s.close()
    settle(0.5)
    s = tcp_connect(S4, 5002, sport=41002)
    recv_all(s)
    time.sleep(0.1)
    s.close()
    settle(0.5)
    s = tcp_connect(S4, 5003, sport=41003)
    s.sendall(bytes(range(256)) * 78 + b"x" * 32)
    recv_exact(s, 20000)
    time.sleep(0.1)
    s.close()
    settle(0.5)
    for srv in (srv1, srv2, srv3):
        srv.close()


# ==========================================================================================
# TCP, crafted


@scenario("tcp_odd_flags",
          "Crafted TCP with odd flag combinations and malformed headers, each on its own "
          "4-tuple unless noted: SYN+FIN, SYN+RST, FIN alone, null, Xmas, SYN+ACK first, RST "
          "first, FIN+ACK first, ACK first (loose pickup) answered by the server, PSH+ACK with "
          "data first, SYN with ECE+CWR answered by SYN+ACK+ECE, SYN+URG, SYN with payload, SYN "
          "with a bad TCP checksum, data offset < 5, data offset beyond the packet, a TCP header "
          "cut to 10 bytes, a bad IP header checksum; then on an established connection: URG "
          "data, bad checksum data, ECE/CWR data, SYN+FIN and null-flag segments.",
          crafted_only=True)
def tcp_odd_flags():
    sa = S()
    w = Wire()
    begin_capture()
    port = iter(range(42001, 42100))

    def one(flags, **kw):
        t = Tcp(w, PC4(0), PS4(0), next(port), 80)
        t.c(flags, **kw)
        return t

    one("SF")
    one("SR")
    one("F")
    one("")
    one("FPU")
    one("SA")
    one("R")
    one("FA")
    t = one("A")          # mid-stream pickup by the loose rule
    t.s("A")
    t.c("PA", b"more")
    t.s("A")
    t = one("PA", data=b"data first")
    t.s("A")
    t = one("SEC")       # ECN setup SYN
    t.s("SAE")
    t.c("A")
    t.c("PAC", b"cwr")   # CWR on data
    t.s("AE")            # ECE echo
    t = one("SU", urgptr=0)
    t.s("SA")
    t.c("A")
    t = one("S", data=b"syn payload")
    t.s("SA")
    t.c("A")
    one("S", chksum=0x1234)
    one("S", dataofs=4)
    one("S", dataofs=15)
    # TCP header of 10 bytes only
    raw = bytes(sa.IP(src=PC4(0), dst=PS4(0)) / sa.TCP(sport=next(port), dport=80, flags="S"))[:30]
    ip = bytearray(raw)
    ip[2:4] = (30).to_bytes(2, "big")
    ip[10:12] = b"\0\0"
    ck = sa.checksum(bytes(ip[:20]))
    ip[10:12] = ck.to_bytes(2, "big")
    w.c(bytes(ip))
    # bad IP header checksum: dropped by the router's IP input before conntrack
    w.c(sa.IP(src=PC4(0), dst=PS4(0), chksum=0x4321) / sa.TCP(sport=next(port), dport=80, flags="S"),
        drop_expected=True)
    # an established connection
    t = Tcp(w, PC4(1), PS4(1), 42100, 80)
    t.handshake()
    t.c("PAU", b"urgent", urgptr=6)
    t.s("A")
    t.c("PA", b"bad checksum", chksum=0xBEEF, advance=False)
    t.c("PA", b"good again")
    t.s("A")
    t.c("PAEC", b"ecn")
    t.s("AE")
    t.c("SF", advance=False)
    t.c("", advance=False)
    t.c("PA", b"still fine")
    t.s("A")
    t.close_by_client()


def _invalid_rst_traffic(w, base=0):
    """RSTs with sequence numbers outside / inside-but-not-exact / exact, both directions."""
    # A: established, then RSTs
    t = Tcp(w, PC4(base), PS4(base), 43001, 80)
    t.handshake()
    t.c("PA", b"hello")
    t.s("PA", b"world")
    t.c("A")
    t.c("R", seq=t.nxt["c"] + 100000000, advance=False)       # far out of window
    t.s("RA", seq=t.nxt["s"] - 100000000, advance=False)      # far behind
    t.c("R", seq=t.nxt["c"] + 1000, advance=False)            # in window, not the expected seq
    t.s("RA", seq=t.nxt["s"] + 1000, advance=False)
    t.c("PA", b"still alive")
    t.s("A")
    t.s("RA")                                                 # exact: closes
    t.c("PA", b"after rst", advance=False)                    # data on a CLOSE connection
    t.c("S", seq=t.nxt["c"] + 50000)                          # new SYN on the same tuple
    t.s("SA")
    t.c("A")
    t.c("FA")
    t.s("FA")
    t.c("A")
    # B: RST answering a SYN, with a wrong ack and then the right one
    t = Tcp(w, PC4(base), PS4(base), 43002, 80)
    t.c("S")
    t.s("RA", ack=t.nxt["c"] + 5, advance=False)              # bad ack
    t.s("RA")                                                 # good RST/ACK
    t.c("S")                                                  # retry after the refusal
    # C: RST from the client in SYN_RECV (before the final ACK)
    t = Tcp(w, PC4(base), PS4(base), 43003, 80)
    t.c("S")
    t.s("SA")
    t.c("R")
    # D: RST without ACK from the server in SYN_SENT (seq 0, unacceptable)
    t = Tcp(w, PC4(base), PS4(base), 43004, 80)
    t.c("S")
    t.s("R", seq=0, advance=False)
    t.s("RA")


@scenario("tcp_rst",
          "Real sockets: connection refused (server kernel RST answers a SYN to a closed port), "
          "client aborts with SO_LINGER 0 (RST), server aborts (RST). Crafted: RSTs far out of "
          "window from both sides (invalid), in-window RSTs with a seq that is not the expected "
          "one, exact RST closing, data after the RST, new SYN on the closed tuple; RST/ACK "
          "with a wrong ack answering a SYN, then the right one; RST from the client in "
          "SYN_RECV; RST without ACK answering a SYN.")
def tcp_rst():
    w = Wire()

    def abort_handler(conn):
        d = recv_exact(conn, 4)
        conn.sendall(d)
        time.sleep(0.3)
        linger0(conn)
        conn.close()

    srv1 = TcpServer(S4, 5101, echo_handler)
    srv2 = TcpServer(S4, 5102, abort_handler)
    begin_capture()
    try:
        tcp_connect(S4, 5999, sport=41101)
    except ConnectionRefusedError:
        pass
    settle()
    s = tcp_connect(S4, 5101, sport=41102)
    s.sendall(b"ping")
    recv_exact(s, 4)
    time.sleep(0.1)
    linger0(s)
    s.close()
    settle()
    s = tcp_connect(S4, 5102, sport=41103)
    s.sendall(b"ping")
    recv_exact(s, 4)
    try:
        s.recv(10)
    except OSError:
        pass
    s.close()
    settle()
    _invalid_rst_traffic(w)
    srv1.close()
    srv2.close()


@scenario("tcp_retrans",
          "Crafted: retransmitted SYN (same ISN), retransmitted SYN-ACK, retransmitted data in "
          "both directions, duplicate ACKs, retransmitted FIN and final ACK; a SYN retransmitted "
          "4 times never answered; a second SYN with a different ISN in SYN_SENT; a SYN-ACK "
          "retransmitted after the handshake completed; partially overlapping retransmission.",
          crafted_only=True)
def tcp_retrans():
    w = Wire()
    begin_capture()
    t = Tcp(w, PC4(0), PS4(0), 44001, 80)
    t.c("S", opts=[("MSS", 1460)])
    t.c("S", seq=t.nxt["c"] - 1, opts=[("MSS", 1460)], advance=False)      # SYN retransmission
    t.s("SA", opts=[("MSS", 1460)])
    t.s("SA", seq=t.nxt["s"] - 1, opts=[("MSS", 1460)], advance=False)     # SYN-ACK retransmission
    t.c("A")
    d = b"a" * 500
    seq = t.nxt["c"]
    t.c("PA", d)
    t.c("PA", d, seq=seq, advance=False)                                     # data retransmission
    t.s("A")
    t.s("A")                                                                 # duplicate ACKs
    t.s("A")
    seq = t.nxt["s"]
    t.s("PA", b"b" * 300)
    t.s("PA", b"b" * 300, seq=seq, advance=False)
    t.c("A")
    seq = t.nxt["c"]
    t.c("PA", b"c" * 400)
    t.c("PA", b"c" * 600, seq=seq + 200)                                     # overlapping
    t.s("A")
    t.c("FA")
    t.c("FA", seq=t.nxt["c"] - 1, advance=False)                            # FIN retransmission
    t.s("FA")
    t.c("A")
    t.c("A")                                                                 # final ACK again
    t.s("FA", seq=t.nxt["s"] - 1, advance=False)                            # server FIN again
    t.c("A")
    # never answered SYN
    t = Tcp(w, PC4(0), PS4(0), 44002, 80)
    for _ in range(5):
        t.c("S", seq=t.nxt["c"] if _ == 0 else t.nxt["c"] - 1, advance=(_ == 0))
    # new ISN in SYN_SENT, then the SYN-ACK for the new one
    t = Tcp(w, PC4(0), PS4(0), 44003, 80)
    t.c("S")
    t.nxt["c"] = 7000000
    t.c("S")
    t.s("SA")
    t.c("A")
    # SYN-ACK retransmitted after the handshake completed, and an old SYN-ACK ack
    t = Tcp(w, PC4(0), PS4(0), 44004, 80)
    t.handshake()
    t.s("SA", seq=t.nxt["s"] - 1, advance=False)
    t.c("A")
    t.c("PA", b"x" * 100)
    t.s("A")
    t.close_by_server()


@scenario("tcp_simultaneous_open",
          "Crafted simultaneous opens: (1) SYN both ways, SYN-ACK both ways, ACKs; (2) SYN both "
          "ways, then only the responder's SYN-ACK and the initiator's ACK; (3) SYN, SYN from "
          "the server with ACK... (a SYN-ACK answering), then a reply SYN retransmitted.",
          crafted_only=True)
def tcp_simultaneous_open():
    w = Wire()
    begin_capture()
    t = Tcp(w, PC4(0), PS4(0), 45001, 45001)
    t.c("S")
    t.s("S")                      # reply-direction SYN: SYN_SENT2
    t.c("SA", seq=t.nxt["c"] - 1, advance=False)   # SYN-ACKs repeat each side's ISN
    t.s("SA", seq=t.nxt["s"] - 1, advance=False)
    t.c("A")
    t.s("A")
    t.c("PA", b"data")
    t.s("PA", b"data")
    t.close_by_client()
    t = Tcp(w, PC4(0), PS4(0), 45002, 45002)
    t.c("S")
    t.s("S")
    t.s("SA", seq=t.nxt["s"] - 1, advance=False)   # server acks the client SYN with its own SYN again
    t.c("A")
    t.c("PA", b"x")
    t.s("A")
    t = Tcp(w, PC4(0), PS4(0), 45003, 45003)
    t.c("S")
    t.s("S")
    t.s("S", seq=t.nxt["s"] - 1, advance=False)    # reply SYN retransmitted
    t.c("SA", seq=t.nxt["c"] - 1, advance=False)
    t.s("A")
    t.c("PA", b"y")
    t.s("A")


def _oow_traffic(w):
    t = Tcp(w, PC4(0), PS4(0), 46001, 80)
    t.handshake()
    t.c("PA", b"a" * 100)
    t.s("A")
    t.c("PA", b"far ahead", seq=t.nxt["c"] + 1000000, advance=False)
    t.c("PA", b"far behind", seq=t.nxt["c"] - 1000000, advance=False)
    t.s("PA", b"far ahead", seq=t.nxt["s"] + 1000000, advance=False)
    t.s("PA", b"far behind", seq=t.nxt["s"] - 1000000, advance=False)
    t.s("A", ack=t.nxt["c"] + 100000, advance=False)                 # ACK of data never sent
    t.c("A", ack=t.nxt["s"] + 100000, advance=False)
    t.s("A", ack=t.nxt["c"] - 200000, advance=False)                 # very old ACK
    t.c("PA", b"old data", seq=t.nxt["c"] - 100 + 0, advance=False)  # retransmitted old bytes: fine
    t.c("PA", b"z" * 10, seq=t.nxt["c"] + 64230, advance=False)      # just inside the window edge
    t.c("PA", b"z" * 10, seq=t.nxt["c"] + 64240 + 100, advance=False)  # just past the right edge
    t.c("PA", b"good")
    t.s("A")
    t.s("PA", b"reply")
    t.c("A")
    t.close_by_client()
    # sequence numbers wrapping through 2^32
    t = Tcp(w, PC4(0), PS4(0), 46002, 80, cisn=2**32 - 300, sisn=2**32 - 10)
    t.handshake()
    t.c("PA", b"w" * 500)      # crosses 2^32
    t.s("PA", b"v" * 100)
    t.c("A")
    t.c("PA", b"u" * 10, seq=t.nxt["c"] + 2**31, advance=False)   # half the space away
    t.close_by_server()


@scenario("tcp_out_of_window",
          "Crafted established connection: segments far ahead / far behind in both directions, "
          "ACK of data never sent (both directions), very old ACK, old retransmitted data, "
          "data just inside / just past the right window edge; then a connection whose "
          "sequence numbers wrap through 2^32 and a segment half the sequence space away.",
          crafted_only=True)
def tcp_out_of_window():
    w = Wire()
    begin_capture()
    _oow_traffic(w)


@scenario("tcp_be_liberal",
          "The traffic of tcp_out_of_window with nf_conntrack_tcp_be_liberal=1.",
          sysctls={"nf_conntrack_tcp_be_liberal": 1}, crafted_only=True)
def tcp_be_liberal():
    w = Wire()
    begin_capture()
    _oow_traffic(w)


@scenario("tcp_ignore_invalid_rst",
          "The crafted RST traffic of tcp_rst with nf_conntrack_tcp_ignore_invalid_rst=1.",
          sysctls={"nf_conntrack_tcp_ignore_invalid_rst": 1}, crafted_only=True)
def tcp_ignore_invalid_rst():
    w = Wire()
    begin_capture()
    _invalid_rst_traffic(w)


@scenario("tcp_max_retrans",
          "Crafted: data segment retransmitted 5 times without an ACK with "
          "nf_conntrack_tcp_max_retrans=2 and nf_conntrack_tcp_timeout_max_retrans=3, so the "
          "entry's timeout drops to 3 s; wait 4.5 s (the entry expires), retransmit again "
          "(picked up mid-stream as new) and let the server ACK. Also a second connection with "
          "data unacknowledged (nf_conntrack_tcp_timeout_unacknowledged=3) that expires.",
          sysctls={"nf_conntrack_tcp_max_retrans": 2, "nf_conntrack_tcp_timeout_max_retrans": 3,
                   "nf_conntrack_tcp_timeout_unacknowledged": 3},
          crafted_only=True)
def tcp_max_retrans():
    w = Wire()
    begin_capture()
    t = Tcp(w, PC4(0), PS4(0), 47001, 80)
    t.handshake()
    seq = t.nxt["c"]
    t.c("PA", b"r" * 200)
    for _ in range(5):
        time.sleep(0.2)
        t.c("PA", b"r" * 200, seq=seq, advance=False)
    u = Tcp(w, PC4(0), PS4(0), 47002, 80)
    u.handshake()
    u.c("PA", b"q" * 100)
    time.sleep(4.5)
    t.c("PA", b"r" * 200, seq=seq, advance=False)
    t.s("A")
    t.c("PA", b"next")
    t.s("A")
    u.c("PA", b"q" * 100, seq=u.nxt["c"] - 100, advance=False)
    u.s("A")


@scenario("tcp_timewait_reuse",
          "Crafted: connection closed by the client (TIME_WAIT), then a new SYN on the same "
          "4-tuple with a higher ISN (reopens), closed again, then a SYN with a lower ISN; a "
          "connection closed by the server then reopened by the client; a SYN from the server "
          "side (reply direction) on a TIME_WAIT entry; a connection aborted by RST, then a "
          "new SYN (CLOSE state reuse).",
          crafted_only=True)
def tcp_timewait_reuse():
    w = Wire()
    begin_capture()
    t = Tcp(w, PC4(0), PS4(0), 48001, 80, cisn=1000000)
    t.handshake()
    t.c("PA", b"one")
    t.s("A")
    t.close_by_client()
    t.c("A", advance=False)                    # a stray ACK in TIME_WAIT
    t.nxt["c"] += 100000                       # higher ISN
    t.nxt["s"] = 9000000
    t.handshake()
    t.c("PA", b"two")
    t.s("A")
    t.close_by_client()
    t.nxt["c"] = 500                           # lower ISN
    t.nxt["s"] = 3000000
    t.handshake()
    t.close_by_client()
    # server closes first, client reopens
    t = Tcp(w, PC4(0), PS4(0), 48002, 80)
    t.handshake()
    t.close_by_server()
    t.nxt["c"] += 12345
    t.handshake()
    t.close_by_client()
    # SYN from the reply direction on TIME_WAIT
    t = Tcp(w, PC4(0), PS4(0), 48003, 80)
    t.handshake()
    t.close_by_client()
    t.s("S", seq=t.nxt["s"] + 1000)
    t.c("SA", seq=t.nxt["c"] + 1000)
    t.s("A")
    # RST, then a new SYN
    t = Tcp(w, PC4(0), PS4(0), 48004, 80)
    t.handshake()
    t.c("RA")
    t.nxt["c"] += 777
    t.handshake()
    t.close_by_client()


@scenario("tcp_fin_edges",
          "Crafted: FIN retransmission, data after FIN from the same side, RST after FIN, FIN "
          "answered by data then FIN (half close), keep-alive probes (seq-1, 0 and 1 byte), "
          "zero-window advertisement and window probes, ACK after both FINs, SYN to an entry in "
          "CLOSE state.",
          crafted_only=True)
def tcp_fin_edges():
    w = Wire()
    begin_capture()
    t = Tcp(w, PC4(0), PS4(0), 49001, 80)
    t.handshake()
    t.c("FA")
    t.c("FA", seq=t.nxt["c"] - 1, advance=False)
    t.c("PA", b"after fin", seq=t.nxt["c"], advance=False)         # data after own FIN
    t.s("A")
    t.s("PA", b"half-closed reply " * 20)                          # server keeps sending
    t.c("A")
    t.s("FA")
    t.c("A")
    t.c("A")                                                       # extra ACK in TIME_WAIT
    # RST after FIN
    t = Tcp(w, PC4(0), PS4(0), 49002, 80)
    t.handshake()
    t.c("FA")
    t.s("A")
    t.s("RA")
    t.c("S", seq=t.nxt["c"] + 1000)                                # SYN on the CLOSE entry
    t.s("SA")
    t.c("A")
    t.close_by_server()
    # keep-alives and zero window
    t = Tcp(w, PC4(0), PS4(0), 49003, 80)
    t.handshake()
    t.c("PA", b"k" * 10)
    t.s("A")
    t.c("A", seq=t.nxt["c"] - 1, advance=False)                   # keep-alive, no data
    t.s("A")
    t.c("A", b"k", seq=t.nxt["c"] - 1, advance=False)             # keep-alive with 1 byte
    t.s("A")
    t.s("A", win=0)                                                # zero window
    t.c("A", b"p", advance=False)                                  # window probe (1 byte)
    t.s("A", win=0)
    t.c("A", b"p", advance=False)
    t.s("A", win=0)
    t.s("A", win=8192)                                             # window opens
    t.c("PA", b"p" * 100)
    t.s("A")
    t.close_by_client()


@scenario("tcp_half_close",
          "Real sockets: the client sends a request and shuts down its write side (FIN); the "
          "server then sends 150 KB on the half-closed connection and closes.")
def tcp_half_close():
    blob = bytes(range(256)) * 600

    def handler(conn):
        recv_all(conn)
        conn.sendall(blob)
        conn.close()

    srv = TcpServer(S4, 5301, handler)
    begin_capture()
    s = tcp_connect(S4, 5301, sport=41301)
    s.sendall(b"GET /big\r\n")
    s.shutdown(socket.SHUT_WR)
    got = recv_all(s)
    assert len(got) == len(blob), len(got)
    s.close()
    settle(0.5)
    srv.close()


def _midstream():
    w = Wire()
    go = {}

    def handler(conn):
        d = recv_exact(conn, 5)
        conn.sendall(d)
        while True:
            d = conn.recv(100)
            if not d or d == b"bye":
                break
            conn.sendall(d.upper())
        time.sleep(0.2)
        conn.close()

    def handler_server_first(conn):
        recv_exact(conn, 5)
        conn.sendall(b"hello")
        while "go" not in go:
            time.sleep(0.01)
        conn.sendall(b"server talks first after the flush")
        recv_exact(conn, 3)
        time.sleep(0.2)
        conn.close()

    srv = TcpServer(S4, 5401, handler)
    srv2 = TcpServer(S4, 5402, handler_server_first)
    a = tcp_connect(S4, 5401, sport=41401)
    a.sendall(b"setup")
    recv_exact(a, 5)
    b = tcp_connect(S4, 5402, sport=41402)
    b.sendall(b"setup")
    recv_exact(b, 5)
    # crafted connection, established before the capture
    t = Tcp(w, PC4(0), PS4(0), 41403, 80, cisn=1000000, sisn=5000000)
    t.handshake(copts=[("MSS", 1460)], sopts=[("MSS", 1460)])
    t.c("PA", b"pre-flush")
    t.s("A")
    u = Tcp(w, PC4(0), PS4(0), 41404, 80)
    u.handshake()
    time.sleep(0.5)
    begin_capture(flush=True)
    # a: the client speaks first after the flush
    a.sendall(b"after flush")
    recv_exact(a, 11)
    time.sleep(0.1)
    # b: the server speaks first (its packet becomes the 'original' direction)
    go["go"] = True
    recv_exact(b, 34)
    b.sendall(b"ack")
    time.sleep(0.1)
    # crafted: pickup from the server side with data, then the client; a far-off segment
    t.s("PA", b"server first")
    t.c("A")
    t.c("PA", b"client data")
    t.s("A")
    t.c("PA", b"far", seq=t.nxt["c"] + 3000000, advance=False)
    t.s("PA", b"window edge", seq=t.nxt["s"] + 60000, advance=False)
    t.close_by_client()
    # crafted: pickup by a FIN, and by a RST
    u.c("FA")
    u.s("FA")
    u.c("A")
    v = Tcp(w, PC4(1), PS4(1), 41405, 80)
    v.c("RA")
    a.sendall(b"bye")
    a.close()
    b.close()
    settle(0.6)
    srv.close()
    srv2.close()


@scenario("tcp_midstream",
          "Mid-stream pickup with nf_conntrack_tcp_loose=1 (default): connections are set up "
          "before the capture, the router's table is flushed (conntrack -F), then the capture "
          "starts and the connections continue: a real one where the client speaks first, a "
          "real one where the server speaks first, a crafted one picked up by a server data "
          "segment (with a far-off and a window-edge segment), one picked up by a FIN, and a "
          "lone RST. Only packets after the flush are in the capture.")
def tcp_midstream():
    _midstream()


@scenario("tcp_midstream_noloose",
          "Same traffic as tcp_midstream with nf_conntrack_tcp_loose=0: no mid-stream pickup.",
          sysctls={"nf_conntrack_tcp_loose": 0})
def tcp_midstream_noloose():
    _midstream()


@scenario("tcp_window_scale_sack",
          "Real sockets: 400 KB server->client and 200 KB client->server with window scaling "
          "and SACK-permitted (Linux defaults), small receive buffer so the windows move. "
          "Crafted: (1) both SYNs with wscale 7 + SACK-permitted, data far beyond 64 KB but "
          "inside the scaled window, ACKs with SACK blocks, data beyond the scaled window; "
          "(2) only the client offers wscale (scaling off both ways): data beyond the unscaled "
          "window; (3) wscale 14 both ways.")
def tcp_window_scale_sack():
    w = Wire()
    blob = bytes(range(256)) * 1600

    def handler(conn):
        d = recv_exact(conn, 200 * 1024)
        assert len(d) == 200 * 1024
        conn.sendall(blob)
        conn.close()

    srv = TcpServer(S4, 5501, handler)
    begin_capture()
    s = sock_in("client", socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
    s.bind((C4, 41501))
    s.settimeout(10)
    s.connect((S4, 5501))
    s.sendall(b"u" * (200 * 1024))
    got = b""
    while True:
        d = s.recv(4096)
        if not d:
            break
        got += d
        time.sleep(0.0005)
    assert len(got) == len(blob)
    s.close()
    settle(0.5)
    srv.close()
    # crafted (1)
    ws = [("MSS", 1460), ("SAckOK", b""), ("WScale", 7)]
    t = Tcp(w, PC4(0), PS4(0), 41502, 80)
    t.c("S", opts=ws, win=65535)
    t.s("SA", opts=ws, win=65535)
    t.c("A", win=1024)                       # 1024 << 7 = 128 KB
    t.s("A", win=1024)
    base = t.nxt["c"]
    t.c("PA", b"d" * 1000)
    t.c("PA", b"e" * 1000, seq=base + 100000, advance=False)      # inside the scaled window
    t.s("A", win=1024, opts=[("NOP", None), ("NOP", None), ("SAck", (base + 100000, base + 101000))])
    t.c("PA", b"f" * 1000, seq=base + 1000)
    t.s("A", win=1024)
    t.c("PA", b"g" * 100, seq=base + 140000, advance=False)       # beyond 128 KB: invalid?
    t.c("PA", b"h" * 100, seq=base + 400000, advance=False)
    t.nxt["c"] = base + 101000
    t.s("A", win=1024)
    t.close_by_client()
    # crafted (2): only the client offers window scaling
    t = Tcp(w, PC4(0), PS4(0), 41503, 80)
    t.c("S", opts=ws, win=65535)
    t.s("SA", opts=[("MSS", 1460)], win=65535)
    t.c("A", win=1024)                       # unscaled: 1024 bytes
    t.s("A", win=1024)
    t.c("PA", b"i" * 500)
    t.c("PA", b"j" * 100, seq=t.nxt["c"] + 30000, advance=False)  # beyond 65535? no: beyond 1024
    t.s("PA", b"k" * 100, seq=t.nxt["s"] + 3000, advance=False)   # beyond the client's 1024
    t.s("A", win=1024)
    t.close_by_server()
    # crafted (3): wscale 14
    big = [("MSS", 1460), ("WScale", 14)]
    t = Tcp(w, PC4(0), PS4(0), 41504, 80)
    t.c("S", opts=big, win=65535)
    t.s("SA", opts=big, win=65535)
    t.c("A", win=65535)
    t.c("PA", b"l" * 100, seq=t.nxt["c"] + 500000000, advance=False)
    t.s("A")
    t.close_by_client()


# ==========================================================================================
# UDP


@scenario("udp_basic",
          "Real sockets: three DNS-like request/response exchanges on different flows, a "
          "one-way stream of 10 datagrams (every packet new), a stream of 5 datagrams that "
          "gets a reply and then continues, 20 short flows from different source ports, and "
          "the same over IPv6 for one flow.")
def udp_basic():
    srv = udp_sock("server", S4, 5353)
    sink = udp_sock("server", S4, 5354)
    srv6 = udp_sock("server", S6, 5353)
    begin_capture()
    for i in range(3):
        c = udp_sock("client", C4, 42101 + i)
        c.sendto(b"query %d" % i, (S4, 5353))
        d, a = srv.recvfrom(100)
        srv.sendto(b"answer " + d, a)
        c.recvfrom(100)
        c.close()
        time.sleep(GAP)
    c = udp_sock("client", C4, 42110)
    for i in range(10):
        c.sendto(b"one-way %d" % i, (S4, 5354))
        sink.recvfrom(100)
        time.sleep(GAP)
    c2 = udp_sock("client", C4, 42111)
    for i in range(5):
        c2.sendto(b"stream %d" % i, (S4, 5353))
        d, a = srv.recvfrom(100)
        time.sleep(GAP)
    srv.sendto(b"finally a reply", a)
    c2.recvfrom(100)
    for i in range(3):
        c2.sendto(b"stream again %d" % i, (S4, 5353))
        srv.recvfrom(100)
        time.sleep(GAP)
    for i in range(20):
        c = udp_sock("client", C4, 42200 + i)
        c.sendto(b"flow %d" % i, (S4, 5353))
        d, a = srv.recvfrom(100)
        if i % 2 == 0:
            srv.sendto(b"r", a)
            c.recvfrom(10)
        c.close()
        time.sleep(0.005)
    c = udp_sock("client", C6, 42300)
    c.sendto(b"v6 query", (S6, 5353))
    d, a = srv6.recvfrom(100)
    srv6.sendto(b"v6 answer", a)
    c.recvfrom(100)
    c.sendto(b"v6 again", (S6, 5353))
    srv6.recvfrom(100)
    time.sleep(0.2)
    for s in (srv, sink, srv6, c, c2):
        s.close()


@scenario("udp_odd",
          "Crafted UDP: bad checksum, zero checksum (IPv4: allowed), length field larger and "
          "smaller than the packet, length < 8, header cut to 6 bytes, port 0 both ways, "
          "zero checksum over IPv6 (not allowed), bad checksum over IPv6; then a valid "
          "request/response on a flow first seen with a bad checksum.",
          crafted_only=True)
def udp_odd():
    sa = S()
    w = Wire()
    begin_capture()

    def u(sport, dport=53, src=None, dst=None, **kw):
        src, dst = src or PC4(0), dst or PS4(0)
        return ipc(src, dst) / sa.UDP(sport=sport, dport=dport, **kw)

    from traffic import ipc
    w.c(u(42401, chksum=0xdead) / b"bad checksum")
    w.c(u(42402, chksum=0) / b"no checksum")
    w.s(u(53, 42402, src=PS4(0), dst=PC4(0), chksum=0) / b"no checksum reply")
    p = bytearray(bytes(u(42403) / b"length too big"))
    p[24:26] = (len(p) - 20 + 10).to_bytes(2, "big")
    p[26:28] = b"\0\0"
    w.c(bytes(p))
    p = bytearray(bytes(u(42404) / b"length too small"))
    p[24:26] = (12).to_bytes(2, "big")
    p[26:28] = b"\0\0"
    w.c(bytes(p))
    p = bytearray(bytes(u(42405) / b"length below 8"))
    p[24:26] = (4).to_bytes(2, "big")
    p[26:28] = b"\0\0"
    w.c(bytes(p))
    raw = bytearray(bytes(u(42406))[:26])
    raw[2:4] = (26).to_bytes(2, "big")
    raw[10:12] = b"\0\0"
    raw[10:12] = sa.checksum(bytes(raw[:20])).to_bytes(2, "big")
    w.c(bytes(raw))
    w.c(u(0, 0) / b"port zero")
    w.s(u(0, 0, src=PS4(0), dst=PC4(0)) / b"port zero back")
    w.c(u(42407, src=PC6(0), dst=PS6(0), chksum=0) / b"v6 zero checksum")
    w.c(u(42408, src=PC6(0), dst=PS6(0), chksum=0x1111) / b"v6 bad checksum")
    w.c(u(42409, chksum=0xbeef) / b"first bad")
    w.c(u(42409) / b"then good")
    w.s(u(53, 42409, src=PS4(0), dst=PC4(0)) / b"reply")
    w.c(u(42409) / b"established")


@scenario("udp_timeout",
          "Real sockets, nf_conntrack_udp_timeout=2, nf_conntrack_udp_timeout_stream=4: (1) "
          "request/response, 3 s pause (entry expires), same tuple again (new again); (2) an "
          "exchange every 0.5 s for 3 s (assured after 2 s, stream timeout), then a 3 s pause "
          "(still there), then a 5 s pause (expired); (3) one-way packets 1.5 s apart (the "
          "unreplied entry survives) then 2.5 s apart (expires).",
          sysctls={"nf_conntrack_udp_timeout": 2, "nf_conntrack_udp_timeout_stream": 4})
def udp_timeout():
    srv = udp_sock("server", S4, 5400)
    begin_capture()
    c1 = udp_sock("client", C4, 42501)
    c2 = udp_sock("client", C4, 42502)
    c3 = udp_sock("client", C4, 42503)

    def rr(c, msg):
        c.sendto(msg, (S4, 5400))
        d, a = srv.recvfrom(100)
        srv.sendto(b"re: " + d, a)
        c.recvfrom(100)

    rr(c1, b"first")
    time.sleep(3)
    rr(c1, b"after expiry")
    t0 = time.time()
    while time.time() - t0 < 3:
        rr(c2, b"stream")
        time.sleep(0.5)
    time.sleep(3)
    rr(c2, b"after 3 s")
    time.sleep(5)
    rr(c2, b"after 5 s")
    c3.sendto(b"a", (S4, 5400)); srv.recvfrom(10)
    time.sleep(1.5)
    c3.sendto(b"b", (S4, 5400)); srv.recvfrom(10)
    time.sleep(2.5)
    c3.sendto(b"c", (S4, 5400)); srv.recvfrom(10)
    time.sleep(0.2)
    for s in (srv, c1, c2, c3):
        s.close()


# ==========================================================================================
# ICMP


@scenario("icmp_echo",
          "Crafted ICMP echo: request/reply for ids 1-3 (2 sequences each), 3 unanswered "
          "requests, an echo reply without request, a duplicate reply, requests and replies "
          "crossing; timestamp request/reply, address mask request, information request, an "
          "unknown type (42), and a reply from the server side to a client request with a "
          "different id.",
          crafted_only=True)
def icmp_echo():
    sa = S()
    w = Wire()
    begin_capture()
    c, s = PC4(0), PS4(0)
    for ident in (1, 2, 3):
        for seq in (1, 2):
            w.c(sa.IP(src=c, dst=s) / sa.ICMP(type=8, id=ident, seq=seq) / b"ping")
            w.s(sa.IP(src=s, dst=c) / sa.ICMP(type=0, id=ident, seq=seq) / b"ping")
    w.s(sa.IP(src=s, dst=c) / sa.ICMP(type=0, id=3, seq=2) / b"ping")        # duplicate reply
    for seq in (1, 2, 3):
        w.c(sa.IP(src=c, dst=s) / sa.ICMP(type=8, id=10, seq=seq) / b"lost")
    w.s(sa.IP(src=s, dst=c) / sa.ICMP(type=0, id=77, seq=1) / b"unsolicited")
    w.c(sa.IP(src=c, dst=s) / sa.ICMP(type=8, id=11, seq=1))
    w.s(sa.IP(src=s, dst=c) / sa.ICMP(type=0, id=12, seq=1))                 # wrong id
    w.s(sa.IP(src=s, dst=c) / sa.ICMP(type=8, id=11, seq=1))                 # request the other way, same id
    w.c(sa.IP(src=c, dst=s) / sa.ICMP(type=13, id=20, seq=1) / (b"\0" * 12))  # timestamp
    w.s(sa.IP(src=s, dst=c) / sa.ICMP(type=14, id=20, seq=1) / (b"\0" * 12))
    w.c(sa.IP(src=c, dst=s) / sa.ICMP(type=17, id=21, seq=1) / (b"\0" * 4))   # address mask
    w.s(sa.IP(src=s, dst=c) / sa.ICMP(type=18, id=21, seq=1) / (b"\0" * 4))
    w.c(sa.IP(src=c, dst=s) / sa.ICMP(type=15, id=22, seq=1))                # information request
    w.s(sa.IP(src=s, dst=c) / sa.ICMP(type=16, id=22, seq=1))
    w.c(sa.IP(src=c, dst=s) / sa.ICMP(type=42, code=0, id=23, seq=1))         # unknown type
    w.c(sa.IP(src=c, dst=s) / sa.ICMP(type=8, id=24, seq=1, chksum=0x1234))   # bad checksum
    w.c(sa.IP(src=c, dst=s) / sa.ICMP(type=8, id=1, seq=3) / b"ping")        # id 1 again


def _err(sa, src, dst, inner, type_=3, code=3, cut=28, **kw):
    return sa.IP(src=src, dst=dst) / sa.ICMP(type=type_, code=code, **kw) / bytes(inner)[:cut]


@scenario("icmp_errors",
          "ICMP errors: real UDP to a closed port (the server kernel's port unreachable is "
          "forwarded: related); crafted: port unreachable / TTL exceeded whose embedded tuple "
          "matches nothing, fragmentation needed about an established TCP connection (from "
          "the server side and from the client side), TTL exceeded from a third address about "
          "a UDP flow, host unreachable about an ICMP echo, an error about an error, an error "
          "with a truncated embedded header, an error whose embedded packet is the wrong "
          "direction, a redirect, parameter problem, source quench.")
def icmp_errors():
    sa = S()
    w = Wire()
    c = udp_sock("client", C4, 42601)
    begin_capture()
    c.sendto(b"nobody listens", (S4, 5999))
    try:
        c.recvfrom(10)
    except OSError:
        pass
    time.sleep(0.3)
    c.sendto(b"again", (S4, 5999))
    time.sleep(0.3)
    c.close()
    C, Sv = PC4(0), PS4(0)
    # no matching connection
    w.s(_err(sa, Sv, C, sa.IP(src=C, dst=Sv) / sa.UDP(sport=42602, dport=53)))
    w.s(_err(sa, PS4(1), C, sa.IP(src=C, dst=Sv, ttl=1) / sa.UDP(sport=42603, dport=53), type_=11, code=0))
    # TCP connection, then frag needed from both sides
    t = Tcp(w, C, Sv, 42604, 80)
    t.handshake()
    inner = sa.IP(src=C, dst=Sv) / sa.TCP(sport=42604, dport=80, flags="PA", seq=t.nxt["c"], ack=t.nxt["s"])
    t.c("PA", b"x" * 1000)
    w.s(_err(sa, Sv, C, inner, code=4, nexthopmtu=1000))                      # related (reply dir)
    w.s(_err(sa, PS4(1), C, inner, code=4, nexthopmtu=1000))                  # from another router
    inner_r = sa.IP(src=Sv, dst=C) / sa.TCP(sport=80, dport=42604, flags="A", seq=t.nxt["s"], ack=t.nxt["c"])
    w.c(_err(sa, C, Sv, inner_r, code=4, nexthopmtu=1000))                    # related, original dir
    w.s(_err(sa, Sv, C, inner_r, code=4, nexthopmtu=1000))                    # embedded in the wrong direction
    w.s(_err(sa, Sv, C, inner, code=4, cut=24, nexthopmtu=1000))              # only 4 bytes of TCP
    w.s(_err(sa, Sv, C, inner, code=4, cut=20, nexthopmtu=1000))              # no transport header
    w.s(_err(sa, Sv, C, sa.IP(src=C, dst=Sv) / sa.TCP(sport=42604, dport=80, flags="PA",
                                                      seq=t.nxt["c"] + 5000000, ack=t.nxt["s"]),
             code=4, nexthopmtu=1000))                                         # seq far off
    t.close_by_client()
    # UDP flow, TTL exceeded from a third address
    w.c(sa.IP(src=C, dst=Sv) / sa.UDP(sport=42605, dport=53) / b"q")
    w.s(_err(sa, PS4(1), C, sa.IP(src=C, dst=Sv, ttl=1) / sa.UDP(sport=42605, dport=53) / b"q", type_=11, code=0))
    w.s(_err(sa, Sv, C, sa.IP(src=C, dst=Sv) / sa.UDP(sport=42605, dport=53) / b"q"))
    # echo, host unreachable about it
    w.c(sa.IP(src=C, dst=Sv) / sa.ICMP(type=8, id=99, seq=1))
    w.s(_err(sa, PS4(1), C, sa.IP(src=C, dst=Sv) / sa.ICMP(type=8, id=99, seq=1), code=1))
    # an error about an error
    e = _err(sa, C, Sv, sa.IP(src=Sv, dst=C) / sa.UDP(sport=53, dport=42605))
    w.s(_err(sa, Sv, C, e, cut=56))
    # redirect, parameter problem, source quench about the UDP flow
    inner_u = sa.IP(src=C, dst=Sv) / sa.UDP(sport=42605, dport=53)
    w.s(_err(sa, PS4(1), C, inner_u, type_=5, code=1, gw=PS4(2)))
    w.s(_err(sa, Sv, C, inner_u, type_=12, code=0, ptr=8))
    w.s(_err(sa, Sv, C, inner_u, type_=4, code=0))
    # error with a bad ICMP checksum about the flow
    w.s(_err(sa, Sv, C, inner_u, chksum=0x4242))


# ==========================================================================================
# IPv6


@scenario("ipv6_mix",
          "IPv6: real TCP (request/response, client close) and UDP (request/response), real "
          "UDP to a closed port (server kernel's ICMPv6 port unreachable is forwarded). "
          "Crafted: ICMPv6 echo request/reply, unanswered echo, unsolicited reply; UDP with a "
          "hop-by-hop header, with a destination-options header, with a routing header "
          "(type 0, segments left 0), with a fragment header on an unfragmented packet (atomic "
          "fragment); a UDP datagram in 2 real fragments; packet-too-big about an established "
          "TCP flow and about nothing; neighbour solicitation, router solicitation and MLD "
          "query sent to global addresses across the router; an unknown ICMPv6 type.")
def ipv6_mix():
    sa = S()
    w = Wire()
    srv = TcpServer(S6, 5601, echo_handler)
    us = udp_sock("server", S6, 5602)
    begin_capture()
    s = tcp_connect(S6, 5601, sport=41601)
    s.sendall(b"hello over v6")
    recv_exact(s, 13)
    s.close()
    settle(0.3)
    c = udp_sock("client", C6, 41602)
    c.sendto(b"v6 udp", (S6, 5602))
    d, a = us.recvfrom(100)
    us.sendto(b"v6 udp reply", a)
    c.recvfrom(100)
    c.sendto(b"to closed port", (S6, 5999))
    time.sleep(0.3)
    c.close()
    C, Sv = PC6(0), PS6(0)
    for seq in (1, 2):
        w.c(sa.IPv6(src=C, dst=Sv) / sa.ICMPv6EchoRequest(id=1, seq=seq))
        w.s(sa.IPv6(src=Sv, dst=C) / sa.ICMPv6EchoReply(id=1, seq=seq))
    w.c(sa.IPv6(src=C, dst=Sv) / sa.ICMPv6EchoRequest(id=2, seq=1))
    w.s(sa.IPv6(src=Sv, dst=C) / sa.ICMPv6EchoReply(id=3, seq=1))
    w.c(sa.IPv6(src=C, dst=Sv) / sa.IPv6ExtHdrHopByHop() / sa.UDP(sport=41603, dport=53) / b"hbh")
    w.s(sa.IPv6(src=Sv, dst=C) / sa.UDP(sport=53, dport=41603) / b"reply")
    w.c(sa.IPv6(src=C, dst=Sv) / sa.IPv6ExtHdrDestOpt() / sa.UDP(sport=41604, dport=53) / b"dstopt")
    w.s(sa.IPv6(src=Sv, dst=C) / sa.IPv6ExtHdrDestOpt() / sa.UDP(sport=53, dport=41604) / b"reply")
    w.c(sa.IPv6(src=C, dst=Sv) / sa.IPv6ExtHdrRouting(type=0, segleft=0, addresses=[]) /
        sa.UDP(sport=41605, dport=53) / b"rh0")
    w.c(sa.IPv6(src=C, dst=Sv) / sa.IPv6ExtHdrFragment(offset=0, m=0, id=0x1234) /
        sa.UDP(sport=41606, dport=53) / b"atomic fragment")
    w.s(sa.IPv6(src=Sv, dst=C) / sa.UDP(sport=53, dport=41606) / b"reply")
    # a UDP datagram in two fragments (the router reassembles it for conntrack)
    full = sa.IPv6(src=C, dst=Sv, nh=44) / sa.IPv6ExtHdrFragment(nh=17, id=0x777) / sa.UDP(sport=41607, dport=53) / (b"F" * 200)
    frags = sa.fragment6(sa.IPv6(src=C, dst=Sv) / sa.IPv6ExtHdrFragment(id=0x777) /
                         sa.UDP(sport=41607, dport=53) / (b"F" * 200), 150)
    del full
    w.c(frags[0], gap=0.002, drop_expected=True)
    for f in frags[1:]:
        w.c(f, gap=0.002, drop_expected=True)
    SENT_ADJ = 1  # one reassembled packet reaches FORWARD
    __import__("traffic").SENT["crafted"] += SENT_ADJ
    time.sleep(GAP)
    w.s(sa.IPv6(src=Sv, dst=C) / sa.UDP(sport=53, dport=41607) / b"reply")
    # TCP flow + packet too big
    t = Tcp(w, C, Sv, 41608, 80)
    t.handshake()
    t.c("PA", b"p" * 1000)
    inner = sa.IPv6(src=C, dst=Sv) / sa.TCP(sport=41608, dport=80, flags="PA", seq=t.nxt["c"] - 1000, ack=t.nxt["s"])
    w.s(sa.IPv6(src=Sv, dst=C) / sa.ICMPv6PacketTooBig(mtu=1280) / bytes(inner))
    w.s(sa.IPv6(src=PS6(1), dst=C) / sa.ICMPv6PacketTooBig(mtu=1280) /
        bytes(sa.IPv6(src=C, dst=Sv) / sa.TCP(sport=41699, dport=80)))
    w.s(sa.IPv6(src=Sv, dst=C) / sa.ICMPv6DestUnreach(code=4) /
        bytes(sa.IPv6(src=C, dst=Sv) / sa.UDP(sport=41603, dport=53) / b"hbh"))
    t.close_by_client()
    # neighbour discovery / MLD with global addresses, routed by the router
    w.c(sa.IPv6(src=C, dst=Sv, hlim=255) / sa.ICMPv6ND_NS(tgt=Sv))
    w.c(sa.IPv6(src=C, dst=Sv, hlim=255) / sa.ICMPv6ND_RS())
    w.c(sa.IPv6(src=C, dst=Sv, hlim=2) / sa.ICMPv6MLQuery())
    w.s(sa.IPv6(src=Sv, dst=C, hlim=255) / sa.ICMPv6ND_NA(tgt=Sv, R=0, S=1))
    w.c(sa.IPv6(src=C, dst=Sv) / sa.ICMPv6Unknown(type=200) if hasattr(sa, "ICMPv6Unknown")
        else sa.IPv6(src=C, dst=Sv, nh=58) / bytes([200, 0, 0, 0, 0, 0, 0, 0]))
    us.close()
    srv.close()


# ==========================================================================================
# other protocols


def _udplite(sa, src, dst, sport, dport, payload):
    hdr = bytearray(struct.pack(">HHHH", sport, dport, 0, 0)) + payload   # coverage 0: all
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack(">BBH", 0, 136, len(hdr))
    ck = sa.checksum(pseudo + bytes(hdr))
    hdr[6:8] = (ck or 0xFFFF).to_bytes(2, "big")
    ip = sa.IP(src=src, dst=dst, proto=136)
    return ip / bytes(hdr)


@scenario("generic_proto",
          "Crafted packets of protocols the kernel tracks with the generic tracker or "
          "protocol-specific ones other than TCP/UDP/ICMP: IP protocol 253 (experimental) "
          "both ways, ESP (50) both ways, DCCP (33; not tracked by this kernel), GRE (47, "
          "version 0) both ways, UDP-Lite (136) request/response, IPv6 protocol 253 both ways.",
          crafted_only=True)
def generic_proto():
    sa = S()
    w = Wire()
    begin_capture()
    C, Sv = PC4(0), PS4(0)
    for _ in range(2):
        w.c(sa.IP(src=C, dst=Sv, proto=253) / b"experimental")
    w.s(sa.IP(src=Sv, dst=C, proto=253) / b"experimental reply")
    w.c(sa.IP(src=C, dst=Sv, proto=253) / b"experimental")
    w.c(sa.IP(src=C, dst=Sv, proto=50) / (struct.pack(">II", 0x1000, 1) + b"e" * 16))
    w.s(sa.IP(src=Sv, dst=C, proto=50) / (struct.pack(">II", 0x2000, 1) + b"e" * 16))
    w.c(sa.IP(src=C, dst=Sv, proto=33) / (struct.pack(">HHBBH", 43000, 5000, 4, 0, 0) + b"\0" * 8))
    w.s(sa.IP(src=Sv, dst=C, proto=33) / (struct.pack(">HHBBH", 5000, 43000, 4, 0, 0) + b"\0" * 8))
    w.c(sa.IP(src=C, dst=Sv) / sa.GRE(proto=0x0800) / sa.IP(src="10.200.9.1", dst="10.200.9.2") / b"inner")
    w.s(sa.IP(src=Sv, dst=C) / sa.GRE(proto=0x0800) / sa.IP(src="10.200.9.2", dst="10.200.9.1") / b"inner")
    w.c(sa.IP(src=C, dst=Sv) / sa.GRE(proto=0x0800) / sa.IP(src="10.200.9.1", dst="10.200.9.2") / b"inner")
    w.c(_udplite(sa, C, Sv, 43001, 53, b"lite query"))
    w.s(_udplite(sa, Sv, C, 53, 43001, b"lite reply"))
    w.c(sa.IPv6(src=PC6(0), dst=PS6(0), nh=253) / b"experimental v6")
    w.s(sa.IPv6(src=PS6(0), dst=PC6(0), nh=253) / b"experimental v6 reply")


@scenario("sctp",
          "Crafted SCTP association (the kernel tracks SCTP): INIT, INIT-ACK, COOKIE-ECHO, "
          "COOKIE-ACK, DATA/SACK both ways, HEARTBEAT/HEARTBEAT-ACK, SHUTDOWN, SHUTDOWN-ACK, "
          "SHUTDOWN-COMPLETE; then DATA without an association, an INIT with a non-zero "
          "verification tag, a packet with a bad CRC32c, DATA with a wrong verification tag "
          "on a live association, ABORT.",
          crafted_only=True)
def sctp():
    sa = S()
    w = Wire()
    begin_capture()
    C, Sv = PC4(0), PS4(0)
    ct, st = 0x11111111, 0x22222222

    def cp(tag, *chunks, sport=43101, dport=5000, **kw):
        p = sa.IP(src=C, dst=Sv) / sa.SCTP(sport=sport, dport=dport, tag=tag, **kw)
        for ch in chunks:
            p = p / ch
        return p

    def sp(tag, *chunks, sport=5000, dport=43101, **kw):
        p = sa.IP(src=Sv, dst=C) / sa.SCTP(sport=sport, dport=dport, tag=tag, **kw)
        for ch in chunks:
            p = p / ch
        return p

    w.c(cp(0, sa.SCTPChunkInit(init_tag=ct, a_rwnd=65536, n_out_streams=1, n_in_streams=1, init_tsn=100)))
    w.s(sp(ct, sa.SCTPChunkInitAck(init_tag=st, a_rwnd=65536, n_out_streams=1, n_in_streams=1, init_tsn=500,
                                   params=[sa.SCTPChunkParamStateCookie(cookie=b"cookie!!")])))
    w.c(cp(st, sa.SCTPChunkCookieEcho(cookie=b"cookie!!")))
    w.s(sp(ct, sa.SCTPChunkCookieAck()))
    w.c(cp(st, sa.SCTPChunkData(tsn=100, stream_id=0, stream_seq=0, data=b"hello sctp")))
    w.s(sp(ct, sa.SCTPChunkSACK(cumul_tsn_ack=100, a_rwnd=65536)))
    w.s(sp(ct, sa.SCTPChunkData(tsn=500, stream_id=0, stream_seq=0, data=b"hello back")))
    w.c(cp(st, sa.SCTPChunkSACK(cumul_tsn_ack=500, a_rwnd=65536)))
    w.c(cp(st, sa.SCTPChunkHeartbeatReq()))
    w.s(sp(ct, sa.SCTPChunkHeartbeatAck()))
    w.c(cp(st + 1, sa.SCTPChunkData(tsn=101, data=b"wrong tag")))
    w.c(cp(st, sa.SCTPChunkShutdown(cumul_tsn_ack=500)))
    w.s(sp(ct, sa.SCTPChunkShutdownAck()))
    w.c(cp(st, sa.SCTPChunkShutdownComplete()))
    # no association
    w.c(cp(0x33333333, sa.SCTPChunkData(tsn=1, data=b"orphan"), sport=43102))
    w.c(cp(0x1234, sa.SCTPChunkInit(init_tag=0x4444, a_rwnd=65536, n_out_streams=1, n_in_streams=1, init_tsn=1),
           sport=43103))
    w.c(cp(0, sa.SCTPChunkInit(init_tag=0x5555, a_rwnd=65536, n_out_streams=1, n_in_streams=1, init_tsn=1),
           sport=43104, chksum=0xdeadbeef))
    # second association, aborted
    w.c(cp(0, sa.SCTPChunkInit(init_tag=0x6666, a_rwnd=65536, n_out_streams=1, n_in_streams=1, init_tsn=1),
           sport=43105))
    w.s(sp(0x6666, sa.SCTPChunkInitAck(init_tag=0x7777, a_rwnd=65536, n_out_streams=1, n_in_streams=1, init_tsn=1,
                                       params=[sa.SCTPChunkParamStateCookie(cookie=b"c2")]), dport=43105))
    w.c(cp(0x7777, sa.SCTPChunkAbort(), sport=43105))
    w.s(sp(0x6666, sa.SCTPChunkData(tsn=1, data=b"after abort"), dport=43105))


# ==========================================================================================
# fragments and many flows


@scenario("ip_fragments",
          "Real UDP datagrams of 3000 bytes over IPv4 and IPv6 (fragmented by the client's "
          "stack at MTU 1500, reassembled by the router's conntrack defragmentation; what "
          "FORWARD logs is the reassembled datagram) with replies of 2500 bytes; a small "
          "datagram sent as 3 crafted IPv4 fragments out of order.")
def ip_fragments():
    sa = S()
    w = Wire()
    s4 = udp_sock("server", S4, 5700)
    s6 = udp_sock("server", S6, 5700)
    begin_capture()
    for addr, srv, caddr in ((S4, s4, C4), (S6, s6, C6)):
        c = udp_sock("client", caddr, 42700)
        c.sendto(b"A" * 3000, (addr, 5700))
        d, a = srv.recvfrom(4000)
        assert len(d) == 3000
        srv.sendto(b"B" * 2500, a)
        assert len(c.recvfrom(4000)[0]) == 2500
        time.sleep(0.1)
        c.close()
    fr = sa.fragment(sa.IP(src=PC4(0), dst=PS4(0), id=4242) / sa.UDP(sport=42701, dport=53) / (b"C" * 100), 40)
    for f in reversed(fr):
        w.c(f, gap=0.002, drop_expected=True)
    time.sleep(GAP)
    w.s(sa.IP(src=PS4(0), dst=PC4(0)) / sa.UDP(sport=53, dport=42701) / b"reply")
    time.sleep(0.2)
    s4.close()
    s6.close()


@scenario("many_flows",
          "Real sockets: 300 IPv4 and 100 IPv6 TCP connections opened concurrently (all open "
          "at once), each echoing 50 bytes, then all closed; interleaved with 150 IPv4 and 50 "
          "IPv6 UDP request/response flows.")
def many_flows():
    srv4 = TcpServer(S4, 5801, echo_handler)
    srv6 = TcpServer(S6, 5801, echo_handler)
    u4 = udp_sock("server", S4, 5802)
    u6 = udp_sock("server", S6, 5802)

    stop = {"v": False}

    def udp_loop(u):
        u.settimeout(0.3)
        while not stop["v"]:
            try:
                d, a = u.recvfrom(100)
            except socket.timeout:
                continue
            u.sendto(d, a)

    ut = [thread(udp_loop, u4), thread(udp_loop, u6)]
    begin_capture()
    socks = []
    udps = []
    for i in range(400):
        v6 = i % 4 == 3
        s = tcp_connect(S6 if v6 else S4, 5801)
        socks.append(s)
        if i % 2 == 0:
            u = udp_sock("client", C6 if i % 8 == 6 else C4)
            u.sendto(b"udp %d" % i, (S6 if i % 8 == 6 else S4, 5802))
            udps.append(u)
    for i, s in enumerate(socks):
        s.sendall(b"%050d" % i)
    for i, s in enumerate(socks):
        assert recv_exact(s, 50) == b"%050d" % i
    for u in udps:
        try:
            u.recvfrom(100)
        except socket.timeout:
            pass
    for i, s in enumerate(socks):
        s.close()
        if i % 2 == 0:
            udps[i // 2].close()
    time.sleep(1.0)
    stop["v"] = True
    srv4.close(join=5)
    srv6.close(join=5)
    for t in ut:
        t.join(1)
    u4.close()
    u6.close()


# ==========================================================================================
# Fragments on the wire (wire.pcap: the router's ingress, before reassembly)


def _cut4(raw, pieces, ident, tos=None):
    """Cut the IPv4 packet `raw` (no options) into fragments: pieces are (offset, length, more)
    over its payload; returns raw fragments with identification `ident` (and TOS `tos`)."""
    import struct as st
    hdr, pay = bytearray(raw[:20]), raw[20:]
    out = []
    for off, ln, more in pieces:
        h = bytearray(hdr)
        if tos is not None:
            h[1] = tos
        st.pack_into(">HH", h, 2, 20 + ln, ident)
        st.pack_into(">H", h, 6, (0x2000 if more else 0) | (off >> 3))
        st.pack_into(">H", h, 10, 0)
        c = sum(st.unpack(">10H", bytes(h)))
        while c > 0xffff:
            c = (c & 0xffff) + (c >> 16)
        st.pack_into(">H", h, 10, ~c & 0xffff)
        out.append(bytes(h) + pay[off:off + ln])
    return out


def _cut6(raw, pieces, ident):
    """As _cut4 for an IPv6 packet without extension headers: a fragment header after the fixed one."""
    import struct as st
    nh, pay = raw[6], raw[40:]
    out = []
    for off, ln, more in pieces:
        h = bytearray(raw[:40])
        h[6] = 44
        st.pack_into(">H", h, 4, 8 + ln)
        fh = st.pack(">BBHI", nh, 0, (off & 0xfff8) | (1 if more else 0), ident)
        out.append(bytes(h) + fh + pay[off:off + ln])
    return out


def _even(total, size):
    return [(o, min(size, total - o), o + size < total) for o in range(0, total, size)]


@scenario("frag_wire",
          "Fragments on the wire, captured at the router's ingress (wire.pcap) beside the NFLOG "
          "labels of the reassembled datagrams (capture.pcap). Real: UDP 3000-byte query and "
          "2500-byte reply over IPv4 and IPv6, ICMP echo of 3000 bytes over IPv4 and IPv6 "
          "(ping sockets; the replies come back fragmented). Crafted TCP over IPv4 and IPv6: "
          "handshake, a 2400-byte segment in 2 fragments in order, one out of order, the "
          "server's ACK. Crafted UDP over IPv4 and IPv6: 3 fragments in reverse order, a "
          "datagram with a duplicated fragment, a datagram whose second fragment overlaps the "
          "first (dropped whole; its last fragment starts a queue that never completes), then a "
          "fresh datagram; a reply to each.", wire=True)
def frag_wire():
    sa = S()
    w = Wire()
    s4 = udp_sock("server", S4, 5710)
    s6 = udp_sock("server", S6, 5710)
    begin_capture()
    for addr, srv, caddr in ((S4, s4, C4), (S6, s6, C6)):
        c = udp_sock("client", caddr, 42710)
        c.sendto(b"A" * 3000, (addr, 5710))
        d, a = srv.recvfrom(4000)
        assert len(d) == 3000
        srv.sendto(b"B" * 2500, a)
        assert len(c.recvfrom(4000)[0]) == 2500
        c.close()
        time.sleep(GAP)
    # ICMP echo through ping sockets (the kernel picks the id and the checksum).
    with netns("client"):
        with open("/proc/sys/net/ipv4/ping_group_range", "w") as f:
            f.write("0 2147483647")
    for fam, proto, typ, addr in ((socket.AF_INET, socket.IPPROTO_ICMP, 8, S4),
                                  (socket.AF_INET6, socket.IPPROTO_ICMPV6, 128, S6)):
        p = sock_in("client", fam, socket.SOCK_DGRAM, proto)
        p.settimeout(2)
        p.sendto(bytes([typ, 0, 0, 0, 0, 0, 0, 1]) + b"P" * 3000, (addr, 0))
        assert len(p.recvfrom(4000)[0]) >= 3000
        p.close()
        time.sleep(GAP)
    # Crafted TCP with fragmented segments.
    for v6, (ca, sv, cut) in enumerate(((PC4(3), PS4(3), _cut4), (PC6(3), PS6(3), _cut6))):
        t = Tcp(w, ca, sv, 42720 + v6, 80)
        t.handshake()
        for k, order in enumerate(((0, 1), (1, 0))):
            raw = bytes(ipc(ca, sv) / sa.TCP(sport=t.sport, dport=80, flags="PA", seq=t.nxt["c"], ack=t.nxt["s"],
                                             window=64240) / (bytes([65 + k]) * 2400))
            t.nxt["c"] += 2400
            hl = 40 if v6 else 20
            fr = cut(raw, _even(len(raw) - hl, 1216), 0x5100 + 16 * v6 + k)
            assert len(fr) == 2
            for i in order:
                w.c(fr[i], gap=0.004, drop_expected=True)
            SENT["crafted"] += 1
            time.sleep(GAP)
        t.s("A")
    # Crafted UDP: reverse order, duplicate, overlap, then a fresh datagram.
    for v6, (ca, sv, cut) in enumerate(((PC4(4), PS4(4), _cut4), (PC6(4), PS6(4), _cut6))):
        hl = 40 if v6 else 20

        def dgram(sport, fill):
            return bytes(ipc(ca, sv) / sa.UDP(sport=sport, dport=53) / (fill * 2000))

        def reply(sport):
            w.s(ipc(sv, ca) / sa.UDP(sport=53, dport=sport) / b"reply")

        raw = dgram(42730, b"R")
        fr = cut(raw, _even(len(raw) - hl, 800), 0x6100 + v6)
        for f in reversed(fr):
            w.c(f, gap=0.004, drop_expected=True)
        SENT["crafted"] += 1
        time.sleep(GAP)
        reply(42730)
        raw = dgram(42731, b"D")
        fr = cut(raw, _even(len(raw) - hl, 800), 0x6200 + v6)
        for f in (fr[0], fr[1], fr[1], fr[2]):
            w.c(f, gap=0.004, drop_expected=True)
        SENT["crafted"] += 1
        time.sleep(GAP)
        reply(42731)
        raw = dgram(42732, b"O")
        n = len(raw) - hl
        fr = cut(raw, [(0, 808, True), (800, 808, True), (1608, n - 1608, False)], 0x6300 + v6)
        for f in fr:
            w.c(f, gap=0.004, drop_expected=True)
        time.sleep(GAP)
        raw = dgram(42733, b"F")
        fr = cut(raw, _even(len(raw) - hl, 1000), 0x6400 + v6)
        for f in fr:
            w.c(f, gap=0.004, drop_expected=True)
        SENT["crafted"] += 1
        time.sleep(GAP)
        reply(42733)
    time.sleep(0.2)
    s4.close()
    s6.close()


@scenario("frag_timeout",
          "Reassembly timeouts (net.ipv4.ipfrag_time=2, nf_conntrack_frag6_timeout=2), wire.pcap "
          "beside the NFLOG labels: the first fragment of an IPv4 and of an IPv6 UDP datagram, a "
          "3 s pause (the queues time out), the rest of both datagrams (a new queue each, never "
          "complete), a 3 s pause, then the same datagrams whole in fragments (complete) and a "
          "reply to each.", sysctls={"net.ipv4.ipfrag_time": 2, "nf_conntrack_frag6_timeout": 2}, wire=True)
def frag_timeout():
    sa = S()
    w = Wire()
    begin_capture()
    cuts = []
    for v6, (ca, sv, cut) in enumerate(((PC4(5), PS4(5), _cut4), (PC6(5), PS6(5), _cut6))):
        raw = bytes(ipc(ca, sv) / sa.UDP(sport=42740, dport=53) / (b"W" * 2000))
        hl = 40 if v6 else 20
        cuts.append((ca, sv, cut, raw, hl))
        w.c(cut(raw, _even(len(raw) - hl, 800), 0x7100 + v6)[0], gap=0.004, drop_expected=True)
    time.sleep(3.0)
    for v6, (ca, sv, cut, raw, hl) in enumerate(cuts):
        for f in cut(raw, _even(len(raw) - hl, 800), 0x7100 + v6)[1:]:
            w.c(f, gap=0.004, drop_expected=True)
    time.sleep(3.0)
    for v6, (ca, sv, cut, raw, hl) in enumerate(cuts):
        for f in cut(raw, _even(len(raw) - hl, 800), 0x7200 + v6):
            w.c(f, gap=0.004, drop_expected=True)
        SENT["crafted"] += 1
        time.sleep(GAP)
        w.s(ipc(sv, ca) / sa.UDP(sport=53, dport=42740) / b"reply")
    time.sleep(0.2)


@scenario("frag_edges",
          "Reassembly edge cases, each on its own datagram, IPv4 and IPv6 alike unless noted, "
          "wire.pcap beside the NFLOG labels: (a) a second last fragment with another end, then "
          "the missing middle; (b) a fragment past the known end, then the rest; (c) an empty "
          "fragment, then the rest; (d) a datagram over 64 KiB; (e, IPv4) fragments with mixed "
          "ECN (not-ECT and ECT(0)); (f, IPv6) fragments whose length is not a multiple of 8, "
          "first and non-first; (g, IPv4 TCP) a tiny first fragment of 8 bytes then the rest "
          "(RFC 1858 legal), and a first fragment with ACK overlapped at offset 8 by one "
          "rewriting the flags to SYN; a whole datagram after each case.", wire=True)
def frag_edges():
    sa = S()
    w = Wire()
    begin_capture()

    def send(frs):
        for f in frs:
            w.c(f, gap=0.004, drop_expected=True)
        time.sleep(GAP)

    for v6, (ca, sv, cut) in enumerate(((PC4(6), PS4(6), _cut4), (PC6(6), PS6(6), _cut6))):
        hl = 40 if v6 else 20

        def dg(sport, n=2000, fill=b"E"):
            return bytes(ipc(ca, sv) / sa.UDP(sport=sport, dport=53) / (fill * n))

        def whole(sport, ident):
            raw = dg(sport, 300, b"w")
            send(cut(raw, _even(len(raw) - hl, 160), ident))
            SENT["crafted"] += 1

        base = 0x8000 + 0x100 * v6
        # (a) two different last fragments, then the middle.
        raw = dg(42750)          # payload 2008
        big = dg(42750, 2800)
        send(cut(raw, [(0, 800, True), (1600, 408, False)], base + 1))
        send(cut(big, [(1600, 200, False)], base + 1))
        send(cut(raw, [(800, 800, True)], base + 1))
        whole(42760, base + 0x11)
        # (b) a fragment past the known end, then the rest.
        send(cut(raw, [(1600, 408, False)], base + 2))
        send(cut(big, [(1600, 800, True)], base + 2))
        send(cut(raw, [(0, 800, True), (800, 800, True)], base + 2))
        whole(42761, base + 0x12)
        # (c) an empty fragment, then the rest.
        send(cut(raw, [(0, 800, True), (800, 0, True)], base + 3))
        send(cut(raw, [(800, 800, True), (1600, 408, False)], base + 3))
        whole(42762, base + 0x13)
        # (d) over 64 KiB.
        small = dg(42763, 8)  # its header; the payload is built by hand (scapy cannot express > 64 KiB)
        huge = small[:hl + 8] + b"H" * ((65544 if v6 else 65520) - 8)
        send(cut(huge, _even(len(huge) - hl, 1480 if not v6 else 1232), base + 4))
        whole(42764, base + 0x14)
        if not v6:
            # (e) mixed ECN: first fragment not-ECT, the others ECT(0).
            send(cut(raw, [(0, 800, True)], base + 5, tos=0))
            send(cut(raw, [(800, 800, True), (1600, 408, False)], base + 5, tos=2))
            whole(42765, base + 0x15)
            # (g) TCP: a legal 8-byte first fragment, then an overlapping flag rewrite.
            t = Tcp(w, ca, sv, 42766, 80)
            t.handshake()
            seg = bytes(ipc(ca, sv) / sa.TCP(sport=42766, dport=80, flags="PA", seq=t.nxt["c"], ack=t.nxt["s"],
                                             window=64240) / (b"t" * 100))
            t.nxt["c"] += 100
            send(cut(seg, [(0, 8, True), (8, 112, False)], base + 6))
            SENT["crafted"] += 1
            t.s("A")
            ack = bytes(ipc(ca, sv) / sa.TCP(sport=42767, dport=80, flags="A", seq=7, ack=9, window=512) / (b"x" * 16))
            syn = bytes(ipc(ca, sv) / sa.TCP(sport=42767, dport=80, flags="S", seq=7, window=512) / (b"x" * 16))
            send(cut(ack, [(0, 24, True)], base + 7) + cut(syn, [(8, 28, False)], base + 7))
            whole(42768, base + 0x17)
        else:
            # (f) not a multiple of 8: a first fragment, and a non-first one.
            send(cut(raw, [(0, 804, True)], base + 8))
            send(cut(raw, [(800, 804, True)], base + 9))
            whole(42769, base + 0x18)
    time.sleep(0.2)


# ==========================================================================================
# What the kernel (6.18) did, as observed when recording; copied into each meta.json.

NOTES = {
    "tcp_basic_v4": "Ordinary: SYN new, everything else established in its direction; all "
                    "three entries end in TIME_WAIT (table.txt) whichever side closed first.",
    "tcp_odd_flags": "Invalid with no entry created: SYN+FIN, SYN+RST, FIN alone, null flags, "
                     "FIN+PSH+URG (Xmas), SYN+ACK first, RST first, FIN+ACK first, SYN with a "
                     "bad TCP checksum (nf_conntrack_checksum=1), data offset 4, data offset 15 "
                     "beyond the packet, a 10-byte TCP header. New: a bare ACK first and PSH+ACK "
                     "with data first (loose pickup, entry created ESTABLISHED [UNREPLIED]); "
                     "SYN+ECE+CWR, SYN+URG and SYN with payload are ordinary new SYNs. On the "
                     "established connection a bad-checksum data segment, SYN+FIN and a "
                     "null-flag segment are invalid, the connection goes on. The bad IP header "
                     "checksum packet is dropped by the router's IP input before conntrack, so "
                     "it is not in the capture (meta crafted_sent excludes it).",
    "tcp_rst": "The RST answering a SYN to a closed port is established:reply. RSTs far out "
               "of window (ahead from the client, behind from the server) are invalid; RSTs "
               "inside the window but not at the expected seq are established and do not "
               "close the entry. The exact RST from the server closes the entry (CLOSE), yet "
               "the client's data after it is established, and the client's new SYN on the "
               "CLOSE entry is established:original (NOT new: the entry is reused because the "
               "last RST came from the other direction; compare tcp_timewait_reuse where the "
               "SYN after the client's own RST is new). Flow 43002: RST/ACK with a wrong ack "
               "answering the SYN is invalid, the right one established:reply; the retry SYN "
               "is new. Flow 43004: a RST without ACK and seq 0 answering a SYN is accepted "
               "(established:reply: the reply side's window is not known yet) and closes the "
               "entry; the proper RST/ACK after it is invalid.",
    "tcp_retrans": "Every packet before the first reply is new (retransmitted SYNs, and the "
                   "second SYN with another ISN in SYN_SENT). Retransmitted SYN-ACK, data, "
                   "FIN, duplicate ACKs and the SYN-ACK retransmitted after the handshake are "
                   "all established (no invalid).",
    "tcp_simultaneous_open": "The server's SYN while the entry is in SYN_SENT is "
                             "established:reply (SYN_SENT2), never new:reply.",
    "tcp_out_of_window": "Invalid: data 1e6 ahead (both directions), ACK of data never sent "
                         "(both directions), and the segment 2^31 away on the wrapping "
                         "connection. Accepted (established): data 1e6 behind, a very old "
                         "ACK, old retransmitted data, data just inside and just past the "
                         "right window edge (the kernel's window check has slack), and the "
                         "connection whose sequence numbers wrap through 2^32.",
    "tcp_be_liberal": "With be_liberal=1 nothing is invalid: every out-of-window segment of "
                      "tcp_out_of_window is established.",
    "tcp_ignore_invalid_rst": "With ignore_invalid_rst=1 the client's RST far ahead of the "
                              "window is still invalid, but the server's RST far behind "
                              "(invalid in tcp_rst) is established. The rest matches tcp_rst.",
    "tcp_max_retrans": "After the 3rd identical retransmission the entry's timeout drops to "
                       "nf_conntrack_tcp_timeout_max_retrans (3 s, see events/table); the "
                       "connection with unacknowledged data gets the 3 s unacknowledged "
                       "timeout. Both entries expire during the 4.5 s pause ([DESTROY] in "
                       "events.txt) and the next data segment is picked up as new (loose).",
    "tcp_timewait_reuse": "A SYN on a TIME_WAIT entry reopens it (new), with a higher or a "
                          "lower ISN. A SYN from the server side on a TIME_WAIT entry also "
                          "creates a new entry, with the server as the original direction "
                          "(new:original). A SYN after an RST-closed (CLOSE) entry is new.",
    "tcp_fin_edges": "Nothing invalid: FIN retransmission, data after one's own FIN, "
                     "keep-alives, window probes against a zero window, extra ACKs in "
                     "TIME_WAIT and a RST after FIN are all established.",
    "tcp_half_close": "A long transfer on a half-closed connection is ordinary established "
                      "traffic (CLOSE_WAIT while the server sends).",
    "tcp_midstream": "With loose=1 the first packet seen after the flush creates an entry "
                     "marked new:original whichever side sent it: when the server speaks "
                     "first the entry's original direction is server->client. A FIN+ACK or "
                     "RST+ACK as first packet is invalid (no pickup), the following ACK is "
                     "picked up.",
    "tcp_midstream_noloose": "With loose=0 every packet after the flush is invalid (no entry "
                             "is ever created); packets are still forwarded (policy accept).",
    "tcp_window_scale_sack": "Real transfer: all established. Crafted flow 41502 (wscale 7 "
                             "both ways, 1024<<7 advertised): data 100 KB, 140 KB and even "
                             "400 KB ahead is accepted (the tracker remembers the largest "
                             "window seen, including the unscaled-looking 65535 of the SYNs "
                             "scaled by 7), but the client's final ACK after both FINs is "
                             "invalid (its seq is behind the 400 KB-ahead segment's end, "
                             "presumably the cause). Flow 41503 (only the client offered "
                             "wscale): segments beyond the small 1024 advertised window are "
                             "accepted both ways (max window 65535 from the SYNs). Flow 41504 "
                             "(wscale 14): a segment 5e8 ahead is invalid.",
    "udp_basic": "A one-way flow is new for every packet; once a reply is seen the flow is "
                 "established; established:original only after a reply.",
    "udp_odd": "Invalid: bad checksum (IPv4 and IPv6), length field larger than the packet, "
               "length below 8, header cut to 6 bytes. NOT invalid (new): a length field "
               "smaller than the packet, zero checksum over IPv4, ports 0 both ways, and "
               "(surprisingly) a zero checksum over IPv6. A flow whose first packet had a bad "
               "checksum gets its entry from the next good packet.",
    "udp_timeout": "Timing-dependent by design. The unreplied entry expires after 2 s; the "
                   "stream that is still active after 2 s gets the 4 s stream timeout and "
                   "[ASSURED] and survives a 3 s pause but not a 5 s one.",
    "icmp_echo": "Echo, timestamp, address mask and information requests create entries; "
                 "an echo reply that matches no request (unsolicited, or wrong id) is invalid; "
                 "an unknown type (42) and a bad ICMP checksum are invalid. A second reply to "
                 "the same request is still established (the ICMP entry is not closed by the "
                 "first reply).",
    "icmp_errors": "Errors whose embedded packet matches an entry are related (reply or "
                   "original direction by the error's own direction), whatever the error's "
                   "source address. Invalid: errors matching nothing, an error embedding the "
                   "reply-direction tuple sent in the reply direction, an error whose embedded "
                   "transport header is missing, an error about an error, an error with a bad "
                   "ICMP checksum. An embedded TCP header cut to 4 bytes (ports only) is still "
                   "related; the embedded seq is not checked.",
    "ipv6_mix": "Extension headers (hop-by-hop, destination options, routing type 0 with "
                "segleft 0, atomic fragment) are skipped: the UDP inside is tracked normally. "
                "The 2-fragment datagram is reassembled before conntrack and FORWARD logs the "
                "reassembled packet once (no fragment header). NS, NA, RS and MLD query "
                "routed across the router are untracked. Unknown ICMPv6 type and unsolicited "
                "echo reply invalid; packet-too-big about nothing invalid.",
    "generic_proto": "Protocol 253, ESP and DCCP (not tracked natively by this kernel) use "
                     "the generic tracker: first packet new, reverse packet established:reply. "
                     "GRE version 0 is tracked by the GRE tracker (keys 0). UDP-Lite "
                     "(full coverage, checksum verified correct when crafted) was invalid in "
                     "both directions; the cause was not investigated.",
    "sctp": "The kernel tracks SCTP natively and checks CRC32c and verification tags: DATA "
            "with a wrong tag, DATA without an association, INIT with a non-zero tag and a "
            "bad CRC are invalid.",
    "ip_fragments": "Fragments never reach FORWARD individually: conntrack defragments, and "
                    "the logged packet is the reassembled datagram (3028 bytes over IPv4); the "
                    "capture has one packet per datagram.",
    "frag_wire": "Only reassembled datagrams reach FORWARD (one NFLOG record each); held "
                 "fragments, the duplicate and the overlapping datagram's fragments never do. "
                 "The overlapped datagram is dropped whole (IPv4: overlap kills the queue; IPv6: "
                 "RFC 5722).",
    "frag_timeout": "Queues time out after ipfrag_time / nf_conntrack_frag6_timeout: the first "
                    "fragments are lost, the rest never complete, nothing of them is logged; "
                    "the datagrams sent whole afterwards are new, their replies established.",
    "frag_edges": "IPv4 drops the whole queue on a second last fragment with another end, on a "
                  "fragment past the known end and on an empty fragment (the rest never "
                  "completes, nothing logged); IPv6 drops only the offending fragment and the "
                  "datagram completes (new). Over 64 KiB: dropped (IPv4 at reassembly, IPv6 "
                  "the fragment past 65535). Mixed not-ECT/ECT(0) fragments: dropped. IPv6 "
                  "fragments whose length is not a multiple of 8 are logged as they are, invalid "
                  "(the first: bad UDP length; a non-first: no layer-4 header). The 8-byte TCP "
                  "first fragment is reassembled (established); the ACK fragment overlapped by a "
                  "SYN rewrite is dropped whole.",
    "many_flows": "Counts of established packets depend on delayed-ACK timing; every "
                  "connection's SYN (and every UDP request) is new.",
}
for _k, _v in NOTES.items():
    if _k in SCENARIOS and not SCENARIOS[_k]["notes"]:
        SCENARIOS[_k]["notes"] = _v

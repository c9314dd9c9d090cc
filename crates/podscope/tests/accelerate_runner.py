import asyncio, fcntl, hashlib, json, os, random, select, socket, struct, sys, termios, time
# server: an asyncio (epoll) server on PORT; client: runs /srv/cmd.K (JSON), writes /srv/done.K
CHUNK = 65536
def stream(seed, n):
    rng = random.Random(seed); sent = 0
    while sent < n:
        c = rng.randbytes(min(CHUNK, n - sent)); sent += len(c); yield c
async def handle(r, w):
    parts = (await r.readline()).split()
    if parts and parts[0] == b"echo":
        while True:
            d = await r.read(CHUNK)
            if not d: break
            w.write(d); await w.drain()
    elif parts and parts[0] == b"up":
        n = int(parts[1]); h = hashlib.sha256(); got = 0
        while got < n:
            d = await r.read(min(CHUNK, n - got))
            if not d: break
            h.update(d); got += len(d)
        w.write(("%d %s\n" % (got, h.hexdigest())).encode()); await w.drain()
    elif parts and parts[0] == b"down":
        for c in stream(int(parts[2]), int(parts[1])):
            w.write(c); await w.drain()
    w.close()
def fionread(s):
    return struct.unpack("i", fcntl.ioctl(s.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]
class Conn:
    """A client connection read through edge-triggered epoll, checking FIONREAD before each read."""
    def __init__(self, ip, port, hello):
        self.s = socket.create_connection((ip, port), timeout=10); self.s.sendall(hello); self.s.setblocking(False)
        self.ep = select.epoll(); self.ep.register(self.s.fileno(), select.EPOLLIN | select.EPOLLET)
        self.fion0 = 0; self.stalls = 0; self.sent = len(hello)
    def send(self, data):
        self.s.setblocking(True); self.s.sendall(data); self.s.setblocking(False); self.sent += len(data)
    def recv_exact(self, n, until_eof=False):
        out = bytearray(); woke = False
        while until_eof or len(out) < n:
            try:
                q = fionread(self.s); d = self.s.recv(CHUNK if until_eof else min(CHUNK, n - len(out)))
            except BlockingIOError:
                # edge-triggered: wait only once the socket said EAGAIN
                if not self.ep.poll(5.0):
                    self.stalls += 1
                    if self.stalls > 3: raise RuntimeError("stalled: no epoll wake-up, have %d of %d" % (len(out), n))
                    continue
                woke = True
                continue
            if not d: return bytes(out)
            # epoll said readable and recv got data: FIONREAD must not have said 0
            if woke and q == 0: self.fion0 += 1
            woke = False
            out += d
        return bytes(out)
    def port(self): return self.s.getsockname()[1]
def client():
    conns = {}; k = 0
    while True:
        p = "/srv/cmd.%d" % k
        if not os.path.exists(p): time.sleep(0.02); continue
        c = json.load(open(p)); res = {"op": c["op"]}
        try:
            if c["op"] == "open":
                conns[c["conn"]] = Conn(c["ip"], c["port"], b"echo\n"); res["port"] = conns[c["conn"]].port()
            elif c["op"] == "rr":
                cn = conns[c["conn"]]; ok = 0; rng = random.Random(k)
                for i in range(c["n"]):
                    m = rng.randbytes(c["size"]); cn.send(m)
                    if cn.recv_exact(len(m)) == m: ok += 1
                res.update(ok=ok, sent=cn.sent, fion0=cn.fion0, stalls=cn.stalls, port=cn.port())
            elif c["op"] == "listen":
                # an echo server inside this pod (a thread blocked in recv per connection), for loopback and self connections
                import threading
                ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                ls.bind(("0.0.0.0", c["port"])); ls.listen()
                def serve():
                    while True:
                        a, _ = ls.accept()
                        def echo(a=a):
                            if a.recv(5) != b"echo\n": return
                            while True:
                                d = a.recv(CHUNK)
                                if not d: break
                                a.sendall(d)
                            a.close()
                        threading.Thread(target=echo, daemon=True).start()
                threading.Thread(target=serve, daemon=True).start()
            elif c["op"] == "close":
                conns.pop(c["conn"]).s.close()
            elif c["op"] == "up":
                cn = Conn(c["ip"], c["port"], b"up %d\n" % c["n"]); h = hashlib.sha256()
                for ch in stream(c["seed"], c["n"]): h.update(ch); cn.send(ch)
                line = cn.recv_exact(0, until_eof=True).decode().split()
                res.update(ok=line == [str(c["n"]), h.hexdigest()], sent=cn.sent, reply=" ".join(line), fion0=cn.fion0, stalls=cn.stalls)
            elif c["op"] == "down":
                cn = Conn(c["ip"], c["port"], b"down %d %d\n" % (c["n"], c["seed"]))
                got = cn.recv_exact(0, until_eof=True); want = b"".join(stream(c["seed"], c["n"]))
                res.update(ok=got == want, got=len(got), sent=cn.sent, fion0=cn.fion0, stalls=cn.stalls)
            elif c["op"] == "http":
                # keep-alive GETs to nginx: the body must be the file, byte for byte
                cn = Conn(c["ip"], c["port"], b""); want = open(c["file"], "rb").read(); ok = 0
                for i in range(c["n"]):
                    cn.send(("GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % c["path"]).encode())
                    head = b""
                    while b"\r\n\r\n" not in head: head += cn.recv_exact(1)
                    h, _, body = head.partition(b"\r\n\r\n")
                    cl = [int(l.split(b":")[1]) for l in h.split(b"\r\n") if l.lower().startswith(b"content-length")][0]
                    body += cn.recv_exact(cl - len(body))
                    ok += (body == want and h.startswith(b"HTTP/1.1 200"))
                res.update(ok=ok, sent=cn.sent, fion0=cn.fion0, stalls=cn.stalls)
        except Exception as e:
            res["error"] = repr(e)
        tmp = "/srv/done.%d.tmp" % k; json.dump(res, open(tmp, "w")); os.rename(tmp, "/srv/done.%d" % k); k += 1
if sys.argv[1] == "server":
    async def main():
        srv = await asyncio.start_server(handle, "0.0.0.0", int(sys.argv[2]))
        async with srv: await srv.serve_forever()
    asyncio.run(main())
else:
    client()

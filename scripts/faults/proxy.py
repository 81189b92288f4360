"""A TCP proxy for faults no server produces by itself."""
import socket
import threading
import time


class Proxy:
    """A TCP proxy on loopback in front of a server, for faults no server produces by itself:
    `freeze()` stops forwarding in both directions while every socket stays open (a peer that
    vanished without RST), and `swallow_exec_replies` cuts a connection right after forwarding an
    EXEC, so the MULTI ran but its reply never arrives."""

    EXEC = b"*1\r\n$4\r\nEXEC\r\n"

    def __init__(self, target_port, swallow_exec_replies=0):
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.frozen = threading.Event()
        self.to_swallow = swallow_exec_replies
        self.swallowed = 0
        self.lock = threading.Lock()
        threading.Thread(target=self.accept, daemon=True).start()

    def freeze(self):
        self.frozen.set()

    def thaw(self):
        self.frozen.clear()

    def accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            cut = threading.Event()
            threading.Thread(target=self.pipe, args=(client, server, True, cut), daemon=True).start()
            threading.Thread(target=self.pipe, args=(server, client, False, cut), daemon=True).start()

    def hold(self):
        while self.frozen.is_set():
            time.sleep(0.02)

    def pipe(self, source, destination, upstream, cut):
        try:
            while True:
                self.hold()
                data = source.recv(65536)
                if not data:
                    break
                self.hold()
                swallow = False
                if upstream and self.EXEC in data:
                    with self.lock:
                        if self.swallowed < self.to_swallow:
                            self.swallowed += 1
                            swallow = True
                if swallow:
                    cut.set()
                    destination.sendall(data)
                    time.sleep(0.1)
                    break
                if cut.is_set():
                    break
                destination.sendall(data)
        except OSError:
            pass
        for end in (source, destination):
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            end.close()

    def close(self):
        self.listener.close()

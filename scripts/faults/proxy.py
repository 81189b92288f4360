"""A TCP proxy for faults no server produces by itself."""
import socket
import threading


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
        # Set while forwarding; cleared by freeze(): every pipe waits on it before each read and write.
        self.flowing = threading.Event()
        self.flowing.set()
        self.to_swallow = swallow_exec_replies
        self.swallowed = 0
        self.lock = threading.Lock()
        threading.Thread(target=self.accept, daemon=True).start()

    def freeze(self):
        self.flowing.clear()

    def thaw(self):
        self.flowing.set()

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
            cut, dropped = threading.Event(), threading.Event()
            threading.Thread(target=self.pipe, args=(client, server, True, cut, dropped), daemon=True).start()
            threading.Thread(target=self.pipe, args=(server, client, False, cut, dropped), daemon=True).start()

    def pipe(self, source, destination, upstream, cut, dropped):
        """`cut`: an EXEC was forwarded whose reply is to be swallowed; `dropped`: the reply came
        (so the MULTI ran) and was not forwarded."""
        try:
            while True:
                self.flowing.wait()
                data = source.recv(65536)
                if not data:
                    break
                self.flowing.wait()
                swallow = False
                if upstream and self.EXEC in data:
                    with self.lock:
                        if self.swallowed < self.to_swallow:
                            self.swallowed += 1
                            swallow = True
                if swallow:
                    cut.set()
                    destination.sendall(data)
                    # Closed once the reply is in (the MULTI ran), or after 5 s without one.
                    dropped.wait(5)
                    break
                if cut.is_set():
                    dropped.set()
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

"""Certificates made with the `openssl` command line, and a private
redis-server that speaks only TLS, for the security tests.

`Certificates(dir)` writes a CA, a server certificate it signed (for
127.0.0.1 and localhost), and a second, unrelated CA ("wrong_ca") that a
client can be pointed at to see verification fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time

import redis

from redis_server import free_port


def _openssl(*args: str, cwd: str) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _make_ca(directory: str, name: str) -> None:
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-keyout", f"{name}.key", "-out", f"{name}.crt", "-subj", f"/CN=greenq test {name}",
             cwd=directory)


class Certificates:
    def __init__(self, directory: str) -> None:
        if shutil.which("openssl") is None:
            raise RuntimeError("the openssl command is missing: apt-get install -y openssl")
        self.dir = directory
        _make_ca(directory, "ca")
        _make_ca(directory, "wrong_ca")
        # The server certificate needs subjectAltName: Python's ssl checks the
        # host name against it, never against the CN.
        with open(os.path.join(directory, "san.ext"), "w") as ext:
            ext.write("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key",
                 "-out", "server.csr", "-subj", "/CN=127.0.0.1", cwd=directory)
        _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", "server.crt",
                 cwd=directory)

    def path(self, name: str) -> str:
        return os.path.join(self.dir, name)

    @property
    def ca(self) -> str:
        return self.path("ca.crt")

    @property
    def wrong_ca(self) -> str:
        return self.path("wrong_ca.crt")


class TlsRedisServer:
    """A redis-server listening only on a TLS port (plain `--port 0`), with
    client certificates not required (`--tls-auth-clients no`)."""

    def __init__(self, extra_args: tuple[str, ...] = ()) -> None:
        self.dir = tempfile.mkdtemp(prefix="greenq-redis-tls-")
        self.certs = Certificates(self.dir)
        self.port = free_port()
        self.extra_args = tuple(extra_args)
        self.process: subprocess.Popen | None = None

    def url(self, ca: str | None = None, auth: str = "") -> str:
        """A rediss:// URL; `auth` is "user:password@" or empty."""
        return f"rediss://{auth}127.0.0.1:{self.port}/0?ssl_ca_certs={ca or self.certs.ca}"

    def client(self, **kwargs) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, ssl=True,
                           ssl_ca_certs=self.certs.ca, **kwargs)

    def start(self) -> "TlsRedisServer":
        c = self.certs
        args = ["redis-server", "--port", "0", "--tls-port", str(self.port),
                "--bind", "127.0.0.1", "--dir", self.dir, "--save", "", "--appendonly", "no",
                "--tls-cert-file", c.path("server.crt"), "--tls-key-file", c.path("server.key"),
                "--tls-ca-cert-file", c.ca, "--tls-auth-clients", "no",
                "--logfile", os.path.join(self.dir, "log"), *self.extra_args]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = self.client(socket_timeout=1, socket_connect_timeout=1)
        deadline = time.monotonic() + 15
        try:
            while True:
                try:
                    client.ping()
                    return self
                except redis.ConnectionError:
                    if self.process.poll() is not None or time.monotonic() > deadline:
                        with open(os.path.join(self.dir, "log")) as log:
                            tail = log.read()[-2000:]
                        self.close()
                        raise RuntimeError(f"TLS redis-server did not start:\n{tail}") from None
                    time.sleep(0.05)
        finally:
            client.close()

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)

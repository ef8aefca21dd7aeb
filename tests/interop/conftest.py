"""Fixtures for the arq interop suite: a real doculearn daemon (its own
database, queue and progress channel) driven only through arq 0.28's client
API, the HTTP API and Redis, as a Python backend would."""

import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import jwt
import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(os.environ.get("DOCULEARN_BIN", ROOT / "target" / "debug" / "doculearn"))
CORPUS = Path(os.environ.get("DOCULEARN_CORPUS", ROOT.parent / "shared" / "corpus"))
SECRET = "interop-secret-interop-secret-interop-1"
SERVICE_TOKEN = "interop-service-token-interop-service-1"
REDIS_URL = "redis://127.0.0.1:6379/0"
LOG_DIR = ROOT / "target" / "interop-logs"


def corpus(name):
    path = CORPUS / name
    assert path.exists(), f"corpus file missing: {path}"
    return path.read_bytes()


class Daemon:
    """One `doculearn serve` process with its own database and queue."""

    def __init__(self, name, serializer="pickle", role="all", env=None):
        assert BIN.exists(), f"build the daemon first: {BIN}"
        tag = uuid.uuid4().hex[:12]
        self.db = f"dl_interop_{tag}"
        self.queue = f"interop:{tag}:queue"
        self.serializer = serializer
        self.env = {
            "DOCULEARN_AUTH__JWT_SECRET": SECRET,
            "DOCULEARN_AUTH__SERVICE_TOKEN": SERVICE_TOKEN,
            "DOCULEARN_DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{self.db}",
            "DOCULEARN_DATABASE__MAX_CONNECTIONS": "5",
            "DOCULEARN_QUEUE__NAME": self.queue,
            "DOCULEARN_QUEUE__SERIALIZER": serializer,
            "DOCULEARN_QUEUE__POLL_INTERVAL_MS": "50",
            "DOCULEARN_PROGRESS__CHANNEL": f"interop:{tag}:progress",
            "DOCULEARN_HTTP__LISTEN": "127.0.0.1:0",
            "DOCULEARN_EMBEDDING__PROVIDER": "hash",
        }
        self.env.update(env or {})
        self.role = role
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.log = LOG_DIR / f"{name}-{tag}.log"
        self.proc = None
        self.start()

    def start(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("DOCULEARN_")}
        env.update(self.env)
        env.pop("RUST_LOG", None)
        self.proc = subprocess.Popen(
            [str(BIN), "serve", "--role", self.role],
            env=env,
            stdout=subprocess.PIPE,
            stderr=open(self.log, "ab"),
            text=True,
        )
        line = self.proc.stdout.readline().strip()
        prefix = "doculearn listening on http://"
        assert line.startswith(prefix), f"daemon did not start: {line!r}; see {self.log}"
        self.addr = line[len(prefix):]

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def drop(self):
        self.stop()
        subprocess.run(
            ["psql", "-h", "127.0.0.1", "-U", "postgres", "-qc", f"DROP DATABASE IF EXISTS {self.db} WITH (FORCE)"],
            capture_output=True,
        )
        subprocess.run(["redis-cli", "del", self.queue, f"{self.queue}:health-check"], capture_output=True)

    # ------------------------------------------------------------ HTTP
    def url(self, path):
        return f"http://{self.addr}{path}"

    def request(self, method, path, token=None, body=None, headers=None):
        import urllib.error
        import urllib.request

        hdrs = dict(headers or {})
        if token:
            hdrs["Authorization"] = f"Bearer {token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        req = urllib.request.Request(self.url(path), data=data, headers=hdrs, method=method)
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def upload(self, token, name, data, enqueue=False):
        """Stores a document through the API; with enqueue=False the caller
        enqueues `doc:{id}` itself, as the seed plan's backend does."""
        import urllib.request

        boundary = uuid.uuid4().hex
        body = (
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n"
        ).encode() + data + f"\r\n--{boundary}--\r\n".encode()
        req = urllib.request.Request(
            self.url(f"/api/v1/documents?enqueue={'true' if enqueue else 'false'}"),
            data=body,
            headers={"Authorization": f"Bearer {token}", "Content-Type": f"multipart/form-data; boundary={boundary}"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=60) as r:
            assert r.status == 202
            return json.loads(r.read())

    def wait_job(self, token, job_id, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            status, job = self.request("GET", f"/api/v1/jobs/{job_id}", token)
            if status == 200 and job["stage"] in ("completed", "failed"):
                return job
            time.sleep(0.1)
        raise AssertionError(f"job {job_id} did not end: {job}")


def token(user, ttl=3600):
    now = int(time.time())
    return jwt.encode(
        {"sub": str(user), "exp": now + ttl, "iat": now, "iss": "doculearn", "aud": "doculearn"},
        SECRET,
        algorithm="HS256",
    )


@pytest.fixture
def daemon_factory(request):
    started = []

    def make(**kwargs):
        d = Daemon(request.node.name.replace("[", "-").replace("]", ""), **kwargs)
        started.append(d)
        return d

    yield make
    for d in started:
        d.drop()


def serializers(ser):
    """(job_serializer, job_deserializer) for arq's client."""
    if ser == "json":
        return (lambda d: json.dumps(d).encode()), json.loads
    return None, None


async def arq_pool(daemon):
    from arq.connections import RedisSettings, create_pool

    ser, de = serializers(daemon.serializer)
    return await create_pool(
        RedisSettings.from_dsn(REDIS_URL),
        job_serializer=ser,
        job_deserializer=de,
        default_queue_name=daemon.queue,
    )

"""doculearn's workers driven by the real arq 0.28 client, exactly as a
Python backend drives arq's own worker (spec/arq-wire.md). Every test runs
against a real daemon, real PostgreSQL and real Redis; most run in both of
arq's wire formats (pickle, its default, and JSON)."""

import asyncio
import datetime
import time
import uuid

import pytest
from arq.jobs import Job, JobStatus, SerializationError
from arq.worker import JobExecutionFailed

from conftest import SERVICE_TOKEN, arq_pool, corpus, serializers, token

BOTH = pytest.mark.parametrize("ser", ["pickle", "json"])


def run(coro):
    return asyncio.run(coro)


async def wait_status(job, wanted, timeout=30):
    seen = []
    deadline = time.time() + timeout
    while time.time() < deadline:
        s = await job.status()
        if not seen or seen[-1] != s:
            seen.append(s)
        if s == wanted:
            return seen
        await asyncio.sleep(0.02)
    raise AssertionError(f"status never became {wanted}: saw {seen}")


def fails_with(ser, exc_info_value, text):
    """A failed job raises arq's own exception in pickle mode; JSON cannot
    carry exceptions, so arq's client raises SerializationError there."""
    if ser == "pickle":
        assert isinstance(exc_info_value, JobExecutionFailed), repr(exc_info_value)
    else:
        assert isinstance(exc_info_value, SerializationError), repr(exc_info_value)
    assert text in str(exc_info_value), str(exc_info_value)


@BOTH
def test_a_backend_enqueues_and_our_worker_runs_it_through_every_status(daemon_factory, ser):
    # One job slot and a slow chunking stage, so "queued" and "in_progress" can be seen.
    d = daemon_factory(
        serializer=ser,
        env={"DOCULEARN_QUEUE__MAX_JOBS": "1", "DOCULEARN_FAULTS__HANG_IN_STAGE": "chunking", "DOCULEARN_FAULTS__HANG_SECS": "2"},
    )
    user = uuid.uuid4()
    t = token(user)
    a = d.upload(t, "manifesto.txt", corpus("debian-manifesto.txt"))
    b = d.upload(t, "plumber.md", corpus("pdfplumber-README.md"))

    async def main():
        redis = await arq_pool(d)
        job_a = await redis.enqueue_job("process_document", a["document_id"], str(user), _job_id=a["job_id"], _expires=3600)
        job_b = await redis.enqueue_job("process_document", b["document_id"], str(user), _job_id=b["job_id"], _expires=3600)
        assert job_a is not None and job_b is not None
        # Equal scores run in id order, as with arq's own worker: either may go first.
        deadline = time.time() + 30
        while JobStatus.in_progress not in (await job_a.status(), await job_b.status()):
            assert time.time() < deadline, "no job started"
            await asyncio.sleep(0.02)
        statuses = {await job_a.status(), await job_b.status()}
        assert statuses == {JobStatus.in_progress, JobStatus.queued}, f"one runs, the other waits: {statuses}"
        result = await job_a.result(timeout=60)
        assert result["document_id"] == a["document_id"]
        assert result["chunks"] > 0
        assert result["pages"] is None
        assert result["model"] == "doculearn/feature-hash"
        assert await job_a.status() == JobStatus.complete
        info = await job_a.info()
        assert info.success is True
        assert info.job_try == 1
        assert info.function == "process_document"
        assert list(info.args) == [a["document_id"], str(user)]
        assert info.kwargs == {}
        assert info.queue_name == d.queue
        assert info.job_id == a["job_id"]
        assert info.enqueue_time <= info.start_time <= info.finish_time
        assert info.finish_time - info.start_time >= datetime.timedelta(seconds=2)
        assert info.result == result
        await job_b.result(timeout=60)
        await redis.aclose()

    run(main())
    # Our own records agree: the job row and its events.
    job = d.wait_job(t, a["job_id"])
    assert job["stage"] == "completed"


@BOTH
def test_duplicate_job_ids_are_refused_while_the_job_or_its_result_exists(daemon_factory, ser):
    d = daemon_factory(serializer=ser)
    user = uuid.uuid4()
    a = d.upload(token(user), "m.txt", corpus("debian-manifesto.txt"))

    async def main():
        redis = await arq_pool(d)
        job = await redis.enqueue_job("process_document", a["document_id"], str(user), _job_id=a["job_id"])
        assert job is not None
        assert await redis.enqueue_job("process_document", a["document_id"], str(user), _job_id=a["job_id"]) is None
        await job.result(timeout=60)
        assert await redis.enqueue_job("process_document", a["document_id"], str(user), _job_id=a["job_id"]) is None
        await redis.aclose()

    run(main())


@BOTH
def test_defer_by_is_honoured(daemon_factory, ser):
    d = daemon_factory(serializer=ser)
    user = uuid.uuid4()
    a = d.upload(token(user), "m.txt", corpus("debian-manifesto.txt"))

    async def main():
        redis = await arq_pool(d)
        job = await redis.enqueue_job("process_document", a["document_id"], str(user), _job_id=a["job_id"], _defer_by=2)
        assert await job.status() == JobStatus.deferred
        await asyncio.sleep(1)
        assert await job.status() == JobStatus.deferred
        await job.result(timeout=60)
        info = await job.info()
        assert info.start_time - info.enqueue_time >= datetime.timedelta(seconds=2)
        await redis.aclose()

    run(main())


@BOTH
def test_defer_until_is_honoured(daemon_factory, ser):
    d = daemon_factory(serializer=ser)
    user = uuid.uuid4()
    a = d.upload(token(user), "m.txt", corpus("debian-manifesto.txt"))

    async def main():
        redis = await arq_pool(d)
        when = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=2)
        job = await redis.enqueue_job("process_document", a["document_id"], str(user), _job_id=a["job_id"], _defer_until=when)
        assert await job.status() == JobStatus.deferred
        await job.result(timeout=60)
        info = await job.info()
        assert info.start_time >= when - datetime.timedelta(milliseconds=50)
        await redis.aclose()

    run(main())


@BOTH
def test_a_job_that_expired_before_it_started_fails_as_arq_says(daemon_factory, ser):
    d = daemon_factory(serializer=ser)
    user = uuid.uuid4()
    a = d.upload(token(user), "m.txt", corpus("debian-manifesto.txt"))

    async def main():
        redis = await arq_pool(d)
        job = await redis.enqueue_job(
            "process_document", a["document_id"], str(user), _job_id=a["job_id"], _defer_by=2, _expires=1
        )
        with pytest.raises(Exception) as e:
            await job.result(timeout=30)
        fails_with(ser, e.value, "job expired")
        info = await job.info()
        assert info.function == "<unknown>" and info.success is False
        await redis.aclose()

    run(main())


@BOTH
def test_max_tries_and_the_retry_counter(daemon_factory, ser):
    d = daemon_factory(serializer=ser)
    user = uuid.uuid4()
    a = d.upload(token(user), "m.txt", corpus("debian-manifesto.txt"))

    async def main():
        redis = await arq_pool(d)
        job = await redis.enqueue_job("process_document", a["document_id"], str(user), _job_id=a["job_id"], _job_try=6)
        with pytest.raises(Exception) as e:
            await job.result(timeout=30)
        fails_with(ser, e.value, "max 5 retries exceeded")
        assert (await job.info()).job_try == 6
        await redis.aclose()

    run(main())
    # The document's own record says why too.
    job = d.wait_job(token(user), a["job_id"])
    assert job["stage"] == "failed" and "max 5 retries exceeded" in job["error"]


def test_a_job_past_its_timeout_ends_with_timeout_error(daemon_factory):
    d = daemon_factory(
        env={
            "DOCULEARN_QUEUE__JOB_TIMEOUT_SECS": "2",
            "DOCULEARN_FAULTS__HANG_IN_STAGE": "embedding",
            "DOCULEARN_FAULTS__HANG_SECS": "30",
        }
    )
    user = uuid.uuid4()
    a = d.upload(token(user), "m.txt", corpus("debian-manifesto.txt"))

    async def main():
        redis = await arq_pool(d)
        job = await redis.enqueue_job("process_document", a["document_id"], str(user), _job_id=a["job_id"])
        started = time.time()
        with pytest.raises(TimeoutError):
            await job.result(timeout=30)
        assert time.time() - started < 10
        assert (await job.info()).success is False
        await redis.aclose()

    run(main())
    job = d.wait_job(token(user), a["job_id"])
    assert job["stage"] == "failed" and job["failed_stage"] == "embedding"


@BOTH
def test_a_failed_document_is_an_exception_with_the_reason(daemon_factory, ser):
    d = daemon_factory(serializer=ser)
    user = uuid.uuid4()
    a = d.upload(token(user), "photo.pdf", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)

    async def main():
        redis = await arq_pool(d)
        job = await redis.enqueue_job("process_document", a["document_id"], str(user), _job_id=a["job_id"])
        with pytest.raises(Exception) as e:
            await job.result(timeout=30)
        fails_with(ser, e.value, "is a PNG image, not a PDF")
        await redis.aclose()

    run(main())


def test_abort_cancels_deferred_queued_and_running_jobs(daemon_factory):
    d = daemon_factory(
        env={"DOCULEARN_QUEUE__MAX_JOBS": "1", "DOCULEARN_FAULTS__HANG_IN_STAGE": "chunking", "DOCULEARN_FAULTS__HANG_SECS": "30"}
    )
    user = uuid.uuid4()
    t = token(user)
    # Three different files: the same bytes again would answer with the first document (dedup).
    docs = [d.upload(t, f"m{i}.txt", corpus("debian-manifesto.txt") + f"\n{i}\n".encode()) for i in range(3)]

    async def main():
        redis = await arq_pool(d)
        deferred = await redis.enqueue_job("process_document", docs[0]["document_id"], str(user), _job_id=docs[0]["job_id"], _defer_by=60)
        running = await redis.enqueue_job("process_document", docs[1]["document_id"], str(user), _job_id=docs[1]["job_id"])
        await wait_status(running, JobStatus.in_progress)
        queued = await redis.enqueue_job("process_document", docs[2]["document_id"], str(user), _job_id=docs[2]["job_id"])
        assert await queued.status() == JobStatus.queued
        assert await deferred.status() == JobStatus.deferred

        started = time.time()
        assert await running.abort(timeout=10) is True
        assert time.time() - started < 3, "a running job stops within a second or two"
        assert await queued.abort(timeout=10) is True
        assert await deferred.abort(timeout=10) is True
        for job in (running, queued, deferred):
            assert await job.status() == JobStatus.complete
            assert (await job.info()).success is False
        await redis.aclose()

    run(main())
    for doc in docs:
        job = d.wait_job(t, doc["job_id"])
        assert job["stage"] == "failed" and "cancel" in job["error"], job


@BOTH
def test_unknown_functions_fail_cleanly(daemon_factory, ser):
    d = daemon_factory(serializer=ser)

    async def main():
        redis = await arq_pool(d)
        job = await redis.enqueue_job("summarise_everything", 1, 2)
        with pytest.raises(Exception) as e:
            await job.result(timeout=30)
        fails_with(ser, e.value, "function 'summarise_everything' not found")
        await redis.aclose()

    run(main())


def test_arguments_we_cannot_use_fail_with_a_clear_reason(daemon_factory):
    d = daemon_factory()
    user = uuid.uuid4()

    async def main():
        redis = await arq_pool(d)
        job = await redis.enqueue_job("process_document", datetime.datetime.now(), str(user))
        with pytest.raises(JobExecutionFailed) as e:
            await job.result(timeout=30)
        assert "datetime.datetime" in str(e.value), str(e.value)
        job = await redis.enqueue_job("process_document", "not-a-uuid", str(user))
        with pytest.raises(JobExecutionFailed) as e:
            await job.result(timeout=30)
        assert "must be a UUID" in str(e.value), str(e.value)
        await redis.aclose()

    run(main())


def test_the_health_check_key_is_written_in_arqs_format(daemon_factory):
    from arq.connections import RedisSettings
    from arq.worker import async_check_health

    d = daemon_factory()

    async def main():
        redis = await arq_pool(d)
        for _ in range(50):
            line = await redis.get(f"{d.queue}:health-check")
            if line:
                break
            await asyncio.sleep(0.1)
        assert line is not None
        text = line.decode()
        for field in ("j_complete=", "j_failed=", "j_retried=", "j_ongoing=", "queued="):
            assert field in text, text
        assert await async_check_health(RedisSettings(), None, d.queue) == 0
        await redis.aclose()

    run(main())
    d.stop()

    async def after():
        redis = await arq_pool(d)
        assert await redis.get(f"{d.queue}:health-check") is None, "a clean shutdown deletes the key"
        await redis.aclose()

    run(after())


def test_keep_result_is_honoured(daemon_factory):
    d = daemon_factory(env={"DOCULEARN_QUEUE__KEEP_RESULT_SECS": "1"})
    user = uuid.uuid4()
    a = d.upload(token(user), "m.txt", corpus("debian-manifesto.txt"))

    async def main():
        redis = await arq_pool(d)
        job = await redis.enqueue_job("process_document", a["document_id"], str(user), _job_id=a["job_id"])
        await job.result(timeout=30)
        await asyncio.sleep(1.5)
        assert await job.status() == JobStatus.not_found
        await redis.aclose()

    run(main())


@BOTH
def test_jobs_our_upload_enqueues_can_be_inspected_with_arqs_client(daemon_factory, ser):
    # An API-only instance: the job stays queued for inspection.
    d = daemon_factory(serializer=ser, role="api")
    user = uuid.uuid4()
    a = d.upload(token(user), "m.txt", corpus("debian-manifesto.txt"), enqueue=True)

    async def main():
        redis = await arq_pool(d)
        _, de = serializers(ser)
        job = Job(a["job_id"], redis, _queue_name=d.queue, _deserializer=de)
        assert await job.status() == JobStatus.queued
        info = await job.info()
        assert info.function == "process_document"
        assert list(info.args) == [a["document_id"], str(user)]
        assert info.kwargs == {}
        assert info.job_try is None
        assert abs((datetime.datetime.now(datetime.timezone.utc) - info.enqueue_time).total_seconds()) < 30
        assert [j.job_id for j in await redis.queued_jobs(queue_name=d.queue)] == [a["job_id"]]
        await redis.aclose()

    run(main())


@BOTH
def test_a_python_arq_worker_can_run_our_jobs_and_report_progress(daemon_factory, ser):
    """The other direction: an operator runs arq's own worker on our queue.
    Its function reports progress through POST /api/v1/jobs/progress, which
    stores and broadcasts it like our own events."""
    import json as _json
    import urllib.request

    from arq.connections import RedisSettings
    from arq.worker import Worker, func

    d = daemon_factory(serializer=ser, role="api")
    user = uuid.uuid4()
    t = token(user)
    a = d.upload(t, "m.txt", corpus("debian-manifesto.txt"), enqueue=True)

    def report(job_id, stage, progress, message):
        body = _json.dumps({"job_id": job_id, "user_id": str(user), "stage": stage, "progress": progress, "message": message}).encode()
        req = urllib.request.Request(
            d.url("/api/v1/jobs/progress"),
            data=body,
            headers={"Authorization": f"Bearer {SERVICE_TOKEN}", "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 200

    async def process_document(ctx, document_id, user_id):
        for stage, p in (("downloading", 0.1), ("extracting", 0.25), ("embedding", 0.6), ("storing", 0.9)):
            await asyncio.to_thread(report, ctx["job_id"], stage, p, f"python worker: {stage}")
        await asyncio.to_thread(report, ctx["job_id"], "completed", 1.0, "done by arq's worker")
        return {"document_id": document_id, "by": "arq"}

    async def main():
        ser_fn, de_fn = serializers(ser)
        worker = Worker(
            functions=[func(process_document, name="process_document")],
            redis_settings=RedisSettings(),
            queue_name=d.queue,
            burst=True,
            job_serializer=ser_fn,
            job_deserializer=de_fn,
            handle_signals=False,
        )
        await worker.main()
        await worker.close()
        redis = await arq_pool(d)
        job = Job(a["job_id"], redis, _queue_name=d.queue, _deserializer=de_fn)
        assert await job.result(timeout=5) == {"document_id": a["document_id"], "by": "arq"}
        await redis.aclose()

    run(main())
    job = d.wait_job(t, a["job_id"], timeout=10)
    assert job["stage"] == "completed" and job["message"] == "done by arq's worker"
    status, history = d.request("GET", f"/api/v1/jobs/{a['job_id']}/history", t)
    stages = [e["stage"] for e in history["events"]]
    assert stages == ["queued", "downloading", "extracting", "embedding", "storing", "completed"], stages
    assert [e["seq"] for e in history["events"]] == list(range(1, 7))


def test_external_progress_needs_the_service_token_and_the_right_owner(daemon_factory):
    d = daemon_factory(role="api")
    user = uuid.uuid4()
    a = d.upload(token(user), "m.txt", corpus("debian-manifesto.txt"))
    update = {"job_id": a["job_id"], "stage": "extracting", "progress": 0.3, "message": "x"}
    assert d.request("POST", "/api/v1/jobs/progress", None, update)[0] == 401
    assert d.request("POST", "/api/v1/jobs/progress", token(user), update)[0] == 401, "a user token is not the service token"
    other = dict(update, user_id=str(uuid.uuid4()))
    assert d.request("POST", "/api/v1/jobs/progress", SERVICE_TOKEN, other)[0] == 404
    assert d.request("POST", "/api/v1/jobs/progress", SERVICE_TOKEN, dict(update, job_id="doc:nope"))[0] == 404
    assert d.request("POST", "/api/v1/jobs/progress", SERVICE_TOKEN, dict(update, progress=7))[0] == 400
    status, body = d.request("POST", "/api/v1/jobs/progress", SERVICE_TOKEN, dict(update, user_id=str(user)))
    assert status == 200 and body["seq"] == 2

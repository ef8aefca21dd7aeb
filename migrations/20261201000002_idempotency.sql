-- Idempotency keys of uploads and batches (`Idempotency-Key` header): a
-- client that retries a request with the same key gets the stored answer
-- instead of a second copy of its documents. Written in the same
-- transaction as the documents, so a key exists exactly when its request
-- committed. `fingerprint` identifies the request (its files' bytes and
-- options): the same key with a different request is refused. Rows older
-- than a day are removed by the watchdog.
CREATE TABLE idempotency_keys (
    user_id     uuid NOT NULL,
    key         text NOT NULL,
    fingerprint text NOT NULL,
    response    jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, key)
);
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);

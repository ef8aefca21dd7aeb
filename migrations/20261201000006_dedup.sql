-- Per-user dedup of uploads, and per-user stage caches.

-- Finding a user's earlier document with the same bytes (an upload answers
-- with it instead of storing a second copy). Not unique: `on_duplicate=keep`
-- makes a second document of the same bytes on purpose, and a failed one
-- does not count. Concurrent uploads of the same bytes by one user are
-- serialised by an advisory lock on (owner, first hex digit of the sha256)
-- in the submitting transaction instead.
CREATE INDEX documents_owner_sha256_idx ON documents (owner_id, sha256) WHERE sha256 IS NOT NULL;

-- The stage caches become per user: a cache shared between users answered
-- a second user's upload of bytes someone else had already processed
-- measurably faster, which told them someone had that file. Keyed by owner
-- now, so a user only ever gets their own earlier work back. The extractor
-- key also carries what the file was read as (its name decides between
-- HTML, Markdown and text) and the OCR settings that change the text
-- (on/off, languages, dpi, page cap). The old rows are dropped: it is a
-- cache, and they name no owner.
DROP TABLE extraction_cache;
DROP TABLE chunk_cache;

CREATE TABLE extraction_cache (
    owner_id   uuid NOT NULL,
    sha256     text NOT NULL,
    extractor  text NOT NULL,
    extracted  jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (owner_id, sha256, extractor)
);

CREATE TABLE chunk_cache (
    owner_id      uuid NOT NULL,
    sha256        text NOT NULL,
    extractor     text NOT NULL,
    chunk_size    integer NOT NULL,
    chunk_overlap integer NOT NULL,
    chunks        jsonb NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (owner_id, sha256, extractor, chunk_size, chunk_overlap)
);

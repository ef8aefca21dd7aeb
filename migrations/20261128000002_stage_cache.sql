-- Outputs of the early stages, kept by content hash, so a re-run of the same
-- bytes (a retry after a later stage failed, a crash, or a re-upload of the
-- same file) skips them. Keyed by `extractor` too: a new extractor version
-- does not reuse an older one's text. The cache holds only what the bytes
-- themselves determine, so sharing it between users reveals nothing to
-- anyone who does not already have the same file.

CREATE TABLE extraction_cache (
    sha256     text NOT NULL,
    extractor  text NOT NULL,
    extracted  jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sha256, extractor)
);

CREATE TABLE chunk_cache (
    sha256        text NOT NULL,
    extractor     text NOT NULL,
    chunk_size    integer NOT NULL,
    chunk_overlap integer NOT NULL,
    chunks        jsonb NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (sha256, extractor, chunk_size, chunk_overlap)
);

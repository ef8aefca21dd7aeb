-- doculearn's initial schema: documents, their chunks with pgvector
-- embeddings, and job progress (the seed plan's Phase 2, plus attempt, seq
-- and failed stage).

-- pgvector first: everything below needs the `vector` type.
-- scripts/install-pgvector.sh builds it into the server when missing.
CREATE EXTENSION IF NOT EXISTS vector;

-- One row per uploaded (or URL-ingested) document. The bytes live here
-- (`content`), so any worker instance can process any document with nothing
-- but database access; a URL document has no bytes until its downloading
-- stage fetched them.
CREATE TABLE documents (
    id            uuid PRIMARY KEY,
    owner_id      uuid NOT NULL,
    name          text NOT NULL,
    -- What the uploader declared; `detected_type` is what the bytes are.
    content_type  text NOT NULL,
    detected_type text,
    size_bytes    bigint NOT NULL DEFAULT 0,
    sha256        text,
    content       bytea,
    source_url    text,
    batch_id      uuid,
    pages         integer,
    chunk_count   integer,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX documents_owner_created_idx ON documents (owner_id, created_at DESC);
CREATE INDEX documents_batch_idx ON documents (batch_id) WHERE batch_id IS NOT NULL;

-- Every embedding model a chunk was embedded with. A model's vectors are only
-- comparable with its own: search always filters on model_id.
CREATE TABLE embedding_models (
    id         serial PRIMARY KEY,
    name       text NOT NULL,
    dimension  integer NOT NULL CHECK (dimension > 0 AND dimension <= 16000),
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (name, dimension)
);
-- The default local model gets id 1 so its index can be created right here.
INSERT INTO embedding_models (id, name, dimension)
VALUES (1, 'sentence-transformers/all-MiniLM-L6-v2', 384);
SELECT setval('embedding_models_id_seq', 1);

-- Chunks of a document's text with their vectors. `embedding` has no fixed
-- dimension so several models can coexist; each model gets a partial HNSW
-- index over `embedding::vector(<dim>)` (pgvector's recommended pattern for
-- mixed dimensions). The daemon creates the index for a configured model at
-- start-up when it is missing; the default model's is created here.
CREATE TABLE chunks (
    id          bigserial PRIMARY KEY,
    document_id uuid NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
    chunk_index integer NOT NULL,
    content     text NOT NULL,
    -- 1-based page the chunk starts on (PDFs), NULL for text formats.
    page        integer,
    model_id    integer NOT NULL REFERENCES embedding_models (id),
    embedding   vector NOT NULL,
    UNIQUE (document_id, chunk_index)
);
-- Cosine distance: the local model's vectors are L2-normalised, and OpenAI's
-- and Ollama's are compared by cosine by convention.
CREATE INDEX chunks_embedding_m1_hnsw ON chunks
    USING hnsw ((embedding::vector(384)) vector_cosine_ops)
    WHERE model_id = 1;

-- Current state of each job: the seed plan's job_progress, plus
--   attempt       incremented each time a worker starts the job; every write
--                 of a worker is fenced by it, so a stale worker writes nothing
--   seq           the last event number, +1 per event across attempts
--   failed_stage  where a failed job stopped
CREATE TABLE job_progress (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    job_id       varchar(255) UNIQUE NOT NULL,
    document_id  uuid REFERENCES documents (id) ON DELETE CASCADE,
    user_id      uuid NOT NULL,
    batch_id     uuid,
    stage        varchar(50) NOT NULL,
    progress     double precision NOT NULL DEFAULT 0.0,
    message      text,
    details      jsonb,
    error        text,
    failed_stage varchar(50),
    attempt      integer NOT NULL DEFAULT 0,
    seq          bigint NOT NULL DEFAULT 0,
    created_at   timestamptz NOT NULL DEFAULT now(),
    started_at   timestamptz,
    last_update  timestamptz NOT NULL DEFAULT now(),
    completed_at timestamptz
);
CREATE INDEX idx_job_progress_user ON job_progress (user_id, created_at DESC);
CREATE INDEX idx_job_progress_document ON job_progress (document_id);
CREATE INDEX idx_job_progress_active ON job_progress (stage, last_update)
    WHERE stage NOT IN ('completed', 'failed');

-- Every event ever sent for a job, in seq order: the WebSocket `resume`
-- replays from here, and analytics read stage durations from it.
CREATE TABLE job_progress_history (
    id         bigserial PRIMARY KEY,
    job_id     varchar(255) NOT NULL REFERENCES job_progress (job_id) ON DELETE CASCADE,
    seq        bigint NOT NULL,
    attempt    integer NOT NULL,
    event_type varchar(50) NOT NULL,
    stage      varchar(50) NOT NULL,
    progress   double precision NOT NULL,
    message    text,
    details    jsonb,
    error      text,
    timestamp  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (job_id, seq)
);

-- Which engine computed each vector, and ANN indexing off the job's path.

-- The engine and precision behind a vector ("openvino-2026.4.1/bf16",
-- "candle-0.11/f32", "openai-api", "feature-hash"). The model (model_id)
-- decides which vectors are comparable and is what search filters on; the
-- engine is the record of how they were computed, so a change of engine
-- (an upgrade, a fallback on a CPU without bf16) is visible per vector.
CREATE TABLE embedding_engines (
    id         serial PRIMARY KEY,
    label      text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE chunks ADD COLUMN engine_id integer REFERENCES embedding_engines (id);
-- Before this migration the default local model ran only on candle in fp32;
-- other models' earlier vectors stay NULL (not recorded).
INSERT INTO embedding_engines (label)
SELECT 'candle-0.11/f32' WHERE EXISTS (SELECT 1 FROM chunks WHERE model_id = 1);
UPDATE chunks SET engine_id = (SELECT id FROM embedding_engines WHERE label = 'candle-0.11/f32')
WHERE model_id = 1;

-- Deferred ANN indexing. Inserting into an HNSW index costs about a
-- millisecond of CPU per row, more than everything else the storing stage
-- does; a job stores its chunks with `indexed = false` (outside every HNSW
-- index, so COPY runs at table speed) and the indexer actor flips them to
-- true in the background, which is when they enter the index. Search reads
-- both sides: the ANN index for indexed rows and an exact scan of the
-- caller's not-yet-indexed rows (few, and reached through the partial
-- index below), so every chunk is searchable the moment its job completes.
-- Rows already stored are in the index: they start as indexed.
ALTER TABLE chunks ADD COLUMN indexed boolean NOT NULL DEFAULT true;
ALTER TABLE chunks ALTER COLUMN indexed SET DEFAULT false;
-- Not-yet-indexed rows, by document: search finds a user's through it, the
-- indexer takes its batches from it.
CREATE INDEX chunks_unindexed_idx ON chunks (document_id) WHERE NOT indexed;

-- A chunk row (about 1 KB of text and 1.5 KB of vector) passes Postgres's
-- 2 KB toast threshold, where every insert tried to compress the text first:
-- half the cost of COPY, for a third of the heap. Rows stay as they are up
-- to 8 KB (a longer chunk is still toasted); exact scans read them without
-- decompressing anything.
ALTER TABLE chunks SET (toast_tuple_target = 8160);

-- Every model's HNSW index now covers indexed rows only. The daemon
-- recreates a configured model's index at start-up when it is missing; the
-- default model's is recreated here.
DO $$
DECLARE ix record;
BEGIN
    FOR ix IN SELECT indexname FROM pg_indexes
              WHERE tablename = 'chunks' AND indexname LIKE 'chunks_embedding_m%_hnsw'
    LOOP
        EXECUTE format('DROP INDEX %I', ix.indexname);
    END LOOP;
END $$;
CREATE INDEX chunks_embedding_m1_hnsw ON chunks
    USING hnsw ((embedding::vector(384)) vector_cosine_ops)
    WHERE model_id = 1 AND indexed;

-- Re-embedding on a change of model.
--
-- Every document records the model whose vectors search uses for it
-- (`search_model_id`). A normal job sets it when it stores its chunks. When
-- the configured model changes, a re-embed job (the document's own job, run
-- again as `reembed_document`) stores the new model's vectors beside the
-- old ones without touching this column, so search keeps answering from the
-- old vectors; once every document of a user has the new model's vectors,
-- one transaction moves all of that user's documents to the new model and
-- only then drops the old vectors.
ALTER TABLE documents ADD COLUMN search_model_id integer REFERENCES embedding_models (id);
UPDATE documents d SET search_model_id = c.model_id
FROM (SELECT DISTINCT ON (document_id) document_id, model_id FROM chunks ORDER BY document_id, model_id) c
WHERE c.document_id = d.id;
CREATE INDEX documents_owner_search_model_idx ON documents (owner_id, search_model_id)
    WHERE search_model_id IS NOT NULL;
-- During a re-embed a document has each chunk twice, once per model: the
-- chunk index is unique per (document, model). The model goes in as an
-- expression the planner cannot match to `model_id = N`: as a plain column
-- it made walking a user's documents through this index look cheaper than
-- the HNSW index for search, as the old (document_id, chunk_index) key never
-- did. Lookups by document still use its first column.
ALTER TABLE chunks DROP CONSTRAINT chunks_document_id_chunk_index_key;
CREATE UNIQUE INDEX chunks_document_chunk_model_key ON chunks (document_id, chunk_index, (model_id + 0));

-- Which arq function a job row runs when doculearn enqueues it (admission,
-- retry): `process_document`, or `reembed_document` for a re-embed.
ALTER TABLE job_progress ADD COLUMN function text NOT NULL DEFAULT 'process_document';

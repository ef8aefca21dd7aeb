-- Hybrid search and citations.

-- Where each chunk is in its document's extracted text: Unicode scalar
-- (character) offsets, end exclusive. NULL for chunks stored before this
-- migration (re-run the job to fill them).
ALTER TABLE chunks ADD COLUMN char_start integer;
ALTER TABLE chunks ADD COLUMN char_end integer;

-- Full-text side of search: the 'simple' configuration (lower-casing only,
-- no stemming, no stop words) works the same for every language the
-- extractor reads; lower-casing follows the database's LC_CTYPE, which must
-- be a UTF-8 locale (C.UTF-8 here) for Cyrillic, Greek or German capitals.
-- Chinese and Japanese have no spaces between words, so the parser would
-- make a whole run one "word": each Han or kana character is made a word of
-- its own instead, and a query in those scripts matches as a phrase of
-- adjacent characters (also where a PDF put spaces between them).
CREATE FUNCTION doculearn_search_text(t text) RETURNS text
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    RETURN regexp_replace(t, '([\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff])', ' \1 ', 'g');
ALTER TABLE chunks ADD COLUMN content_tsv tsvector
    GENERATED ALWAYS AS (to_tsvector('simple', doculearn_search_text(content))) STORED;
CREATE INDEX chunks_content_tsv_idx ON chunks USING gin (content_tsv);

-- A document's extracted text, once, so a client can show the page a hit
-- cites. page_starts: character offset where each page begins (empty for
-- formats without pages). Written in the storing transaction.
CREATE TABLE document_texts (
    document_id uuid PRIMARY KEY REFERENCES documents (id) ON DELETE CASCADE,
    text        text NOT NULL,
    page_starts integer[] NOT NULL DEFAULT '{}'
);

-- Cached chunks from before this migration have no character offsets.
DELETE FROM chunk_cache;

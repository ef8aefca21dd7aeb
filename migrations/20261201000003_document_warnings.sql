-- What a user should know about text that was lost while reading a document
-- ("14 of 153 pages had text that could not be decoded"), written by the
-- extracting stage and shown on the document, its job and the UI card.
ALTER TABLE documents ADD COLUMN warnings text[] NOT NULL DEFAULT '{}';

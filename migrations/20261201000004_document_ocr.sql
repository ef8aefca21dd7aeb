-- Which pages of a document came from OCR (1-based) and Tesseract's mean
-- word confidence over them (0–100), written by the extracting stage.
ALTER TABLE documents ADD COLUMN ocr_pages integer[] NOT NULL DEFAULT '{}';
ALTER TABLE documents ADD COLUMN ocr_confidence real;

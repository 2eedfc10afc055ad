-- Receipts and the invoices (batches) they are settled in: the same states as
-- the SQLite ledger. Amounts are decimal text: u128 atto-units, exact.
CREATE TABLE batches (
    batch_id      TEXT PRIMARY KEY,
    merkle_root   TEXT NOT NULL,
    receipt_count BIGINT NOT NULL,
    billed        TEXT NOT NULL,
    uri           TEXT NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('built', 'sent', 'settled')),
    tx_hash       TEXT,
    block_number  BIGINT,
    created_at_ms BIGINT NOT NULL
);
CREATE TABLE receipts (
    seq            BIGSERIAL PRIMARY KEY,
    request_id     TEXT NOT NULL UNIQUE,
    account        TEXT NOT NULL,
    payer          TEXT NOT NULL,
    amount         TEXT NOT NULL,
    finished_at_ms BIGINT NOT NULL,
    body           TEXT NOT NULL,
    state          TEXT NOT NULL DEFAULT 'pending'
                   CHECK (state IN ('pending', 'batched', 'settled', 'unsettleable')),
    batch_id       TEXT REFERENCES batches(batch_id),
    note           TEXT
);
CREATE INDEX receipts_by_state ON receipts(state, seq);
CREATE INDEX receipts_by_batch ON receipts(batch_id, seq);

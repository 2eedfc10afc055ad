-- Audit outcomes per node, so every gateway sharing this database routes on
-- the same trust: the counts are kept, each gateway derives the score, and the
-- first quarantine (JSON: evidence, reasons) stands for all of them.
CREATE TABLE node_trust (
    node         TEXT PRIMARY KEY,
    passed       BIGINT NOT NULL DEFAULT 0,
    failed       BIGINT NOT NULL DEFAULT 0,
    inconclusive BIGINT NOT NULL DEFAULT 0,
    quarantine   TEXT
);

-- Named leases: the settler runs in one gateway at a time, the one holding
-- the lease; a holder that stops renewing loses it when it expires.
CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);

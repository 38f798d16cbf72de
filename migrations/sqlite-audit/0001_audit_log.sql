-- The audit log in its own SQLite file (`<name>-audit.db` beside the main one),
-- with its own write lock and page size; the same tables as the main file held
-- before (migrations/sqlite/0001_audit_log.sql), which evhost moves here.
-- Each writer (daemon) appends to its own hash chain: `hash` covers the row and
-- `prev_hash`, the hash of the row before it in the same chain.
CREATE TABLE audit_log (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    chain         TEXT    NOT NULL,
    chain_seq     INTEGER NOT NULL,
    event_id      TEXT    NOT NULL,
    event_type    TEXT    NOT NULL,
    actor         TEXT,
    actor_token   TEXT,
    actor_ip      TEXT,
    resource_type TEXT,
    resource_id   TEXT,
    details       TEXT    NOT NULL,
    time_us       INTEGER NOT NULL,   -- event time, microseconds since the Unix epoch
    recorded_us   INTEGER NOT NULL,   -- when the row was written (retention uses this)
    prev_hash     TEXT    NOT NULL,
    hash          TEXT    NOT NULL,
    UNIQUE (event_id),
    UNIQUE (chain, chain_seq)
);
CREATE INDEX audit_log_type ON audit_log (event_type, seq);
CREATE INDEX audit_log_actor ON audit_log (actor, seq);
CREATE INDEX audit_log_resource ON audit_log (resource_type, resource_id, seq);
CREATE INDEX audit_log_time ON audit_log (time_us);

-- Where a chain resumes after retention purged its oldest rows: the last purged
-- row's position and hash, so verification of what remains still starts from a
-- known hash.
CREATE TABLE audit_anchor (
    chain      TEXT PRIMARY KEY,
    chain_seq  INTEGER NOT NULL,
    hash       TEXT    NOT NULL,
    purged_us  INTEGER NOT NULL
);

-- The daemons sharing this database (one row per node, by its chain id). A node
-- heartbeats while it runs and marks itself stopped when it stops; a node that
-- vanished is taken over by another (its undispatched log rows and its leased
-- deliveries), which records itself in `taken_over_by`.
CREATE TABLE nodes (
    node          TEXT   PRIMARY KEY,
    owner         TEXT   NOT NULL,
    hostname      TEXT   NOT NULL,
    pid           BIGINT NOT NULL,
    version       TEXT   NOT NULL,
    started_us    BIGINT NOT NULL,
    heartbeat_us  BIGINT NOT NULL,
    stopped_us    BIGINT,
    taken_over_by TEXT
);

-- The audit log is the event log: every accepted event is appended here before it is
-- acknowledged, and everything downstream is a consumer of these rows.
-- `source` is the event's source; it is NULL for management actions and decisions,
-- which are recorded but not dispatched. The row hash covers it when it is set.
ALTER TABLE audit_log ADD COLUMN source TEXT;

-- How far each consumer of the log has got, per chain: every event row of `chain`
-- up to `position` (its chain_seq) has been handled by `consumer`.
CREATE TABLE log_positions (
    consumer   TEXT    NOT NULL,
    chain      TEXT    NOT NULL,
    position   BIGINT  NOT NULL,
    updated_us BIGINT  NOT NULL,
    PRIMARY KEY (consumer, chain)
);

-- Webhook endpoints, the delivery outbox and the attempt history.

CREATE TABLE webhook_endpoints (
    id                       TEXT PRIMARY KEY,
    name                     TEXT    NOT NULL,
    url                      TEXT    NOT NULL,
    events                   TEXT    NOT NULL,   -- JSON array of type patterns
    domain                   TEXT,               -- only events of this mail domain
    format                   TEXT    NOT NULL,   -- esp | cloudevents
    enabled                  BOOLEAN NOT NULL,
    disabled_reason          TEXT,               -- operator | gone | failing
    secret                   TEXT    NOT NULL,   -- whsec_…
    previous_secret          TEXT,               -- still signs until previous_secret_until_us
    previous_secret_until_us BIGINT,
    failure_count            BIGINT  NOT NULL DEFAULT 0,  -- failed deliveries in a row
    last_triggered_us        BIGINT,
    created_us               BIGINT  NOT NULL,
    updated_us               BIGINT  NOT NULL
);

-- One row per event that at least one endpoint receives: the bodies, serialized once.
CREATE TABLE webhook_messages (
    id          TEXT PRIMARY KEY,   -- the event id
    event_type  TEXT    NOT NULL,
    body        TEXT    NOT NULL,   -- {"id","event","timestamp","data"}
    cloudevent  TEXT,               -- structured CloudEvent, when an endpoint wants one
    created_us  BIGINT  NOT NULL
);

-- The outbox: one row per (event, endpoint). A row is `pending` until an attempt
-- succeeds or the retries run out. `owner` and a future `next_attempt_us` form a
-- lease: the daemon that claimed the row is sending it; when the lease runs out
-- (the daemon died), any daemon may claim it again.
CREATE TABLE webhook_deliveries (
    id              TEXT PRIMARY KEY,   -- UUID v7: time-ordered; the webhook-id header
    endpoint_id     TEXT    NOT NULL,
    message_id      TEXT    NOT NULL,
    event_type      TEXT    NOT NULL,
    status          TEXT    NOT NULL,   -- pending | succeeded | failed
    attempts        BIGINT  NOT NULL DEFAULT 0,
    next_attempt_us BIGINT  NOT NULL,
    owner           TEXT,
    last_status     BIGINT,
    last_error      TEXT,
    created_us      BIGINT  NOT NULL,
    updated_us      BIGINT  NOT NULL
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (endpoint_id, next_attempt_us)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, id);

CREATE TABLE webhook_attempts (
    delivery_id  TEXT    NOT NULL,
    attempt      BIGINT  NOT NULL,
    time_us      BIGINT  NOT NULL,
    status_code  BIGINT,
    latency_us   BIGINT  NOT NULL,
    error        TEXT,
    response     TEXT,               -- the first 1 KiB of the response body
    PRIMARY KEY (delivery_id, attempt)
);

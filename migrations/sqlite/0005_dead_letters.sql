-- Rows a writer could not write and never will as they are (the database refuses
-- them: a constraint, a value it cannot store), set aside so that the rest of their
-- batch goes on. `body` is the row as JSON text; retrying writes it again.
CREATE TABLE dead_letters (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    kind      TEXT    NOT NULL,
    item_key  TEXT    NOT NULL,
    body      TEXT    NOT NULL,
    error     TEXT    NOT NULL,
    attempts  INTEGER NOT NULL,
    first_us  INTEGER NOT NULL,
    last_us   INTEGER NOT NULL,
    writer    TEXT    NOT NULL,
    UNIQUE (kind, item_key)
);

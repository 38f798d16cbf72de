-- The audit log lives in its own file (migrations/sqlite-audit); 0001 made its tables
-- in the main file too, before the split. No release ever held rows there.
DROP TABLE IF EXISTS main.audit_log;
DROP TABLE IF EXISTS main.audit_anchor;

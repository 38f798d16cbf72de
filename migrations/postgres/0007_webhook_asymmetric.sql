-- Standard Webhooks asymmetric signatures (`v1a`, Ed25519) per endpoint. The key is
-- derived from the endpoint's secret, so nothing else is stored. (`asymmetric` alone is
-- a reserved word in PostgreSQL.)
ALTER TABLE webhook_endpoints ADD COLUMN asymmetric_signing BOOLEAN NOT NULL DEFAULT FALSE;

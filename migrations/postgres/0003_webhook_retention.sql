-- Retention removes a message once no delivery refers to it; this finds them.
CREATE INDEX webhook_deliveries_message ON webhook_deliveries (message_id);

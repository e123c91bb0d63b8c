-- The request that made a refund: the caller's token, the payment and the request's Idempotency-Key.
-- A retry under the same key finds the refund it made instead of reserving another, even once the
-- key's record has expired, or its lock timed out while the refund was still being sent.
ALTER TABLE refunds ADD COLUMN request_key TEXT;
CREATE UNIQUE INDEX refunds_request_key ON refunds (request_key) WHERE request_key IS NOT NULL;

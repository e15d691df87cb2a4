-- One batch of :n messages through Hookline's writes at saturation: ingest (messages and
-- deliveries, one statement, one commit), claim (the claim's statement; with claim=0 the
-- deliveries are leased as they are inserted instead, Hookline's path while a lane has room),
-- record (with lock=1 the recorder's locking read, then settle and insert the attempts, one
-- commit). Variables from run.sh: n, claim, lock.
BEGIN;
WITH m AS (INSERT INTO messages (id, app_id, event_type, payload, created_at, expires_at)
  SELECT 'msg_' || md5(random()::text || clock_timestamp()::text), 'app_3MtkyhoG6zMrydd4EqgdbgmkGHm', 'bench.good',
    '{"type":"bench.good","data":{"n":12345,"padding":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}}', (extract(epoch from clock_timestamp())*1000)::bigint, (extract(epoch from clock_timestamp())*1000)::bigint + 86400000
  FROM generate_series(1, :n) RETURNING id)
INSERT INTO deliveries (msg_id, endpoint_id, app_id, status, attempts, next_attempt, due_at, updated_at, lease_owner)
  SELECT id, 'ep_3MtkyhtCXxszbjPOFyo4HWzgq9T', 'app_3MtkyhoG6zMrydd4EqgdbgmkGHm', 0, 0, 1796177507259,
    CASE WHEN :claim = 1 THEN 1796177507259 ELSE 2000000000000 + :client_id END, 1796177507259,
    CASE WHEN :claim = 1 THEN NULL ELSE 'c' || :client_id END
  FROM m;
COMMIT;
\if :claim
WITH due AS (SELECT msg_id, endpoint_id FROM deliveries WHERE due_at <= 1796177507259 ORDER BY due_at LIMIT :n FOR UPDATE SKIP LOCKED)
UPDATE deliveries d SET due_at = 2000000000000 + :client_id, lease_owner = 'c' || :client_id FROM due WHERE d.msg_id = due.msg_id AND d.endpoint_id = due.endpoint_id;
\endif
BEGIN;
\if :lock
SELECT count(*) FROM (SELECT msg_id FROM deliveries WHERE due_at = 2000000000000 + :client_id AND lease_owner = 'c' || :client_id ORDER BY msg_id, endpoint_id FOR UPDATE) s;
\endif
WITH u AS (UPDATE deliveries SET status = 1, due_at = NULL, lease_owner = NULL, updated_at = 1796177507300, total_attempts = 1, last_code = 200, last_attempt_at = 1796177507300
    WHERE due_at = 2000000000000 + :client_id AND lease_owner = 'c' || :client_id RETURNING msg_id, endpoint_id, app_id)
INSERT INTO attempts (id, msg_id, endpoint_id, app_id, url, status, status_code, response, duration_ms, trigger, error, created_at)
  SELECT 'atmpt_' || md5(random()::text || msg_id), msg_id, endpoint_id, app_id, 'http://127.0.0.1:41365/hook', 1, 200, '', 1, 0, NULL, 1796177507300 FROM u;
COMMIT;

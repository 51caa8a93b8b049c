-- The workers' liveness locks held right now, as the keys they took (see
-- 0005_worker_liveness.sql): session advisory locks taken with a single bigint key, which
-- pg_locks shows as the key's high half in classid, its low half in objid, and objsubid 1.
-- One definition for every claim that asks whether a job's or a stream's worker is alive.
CREATE VIEW held_liveness_locks AS
SELECT (l.classid::bigint << 32) | l.objid::bigint AS lock_key
FROM pg_locks l
WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database());

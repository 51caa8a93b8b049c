-- A dead worker's exports are claimable at once, not only when their lease runs out.
-- While a worker is connected it holds a session-level advisory lock on a 64-bit key of its
-- own; PostgreSQL releases the lock when the worker's connection closes (a crash, kill -9).
-- A PROCESSING export records the key of the worker running it: when no session holds that
-- key any more, the export is claimable again. NULL (a worker that cannot hold session
-- locks, behind a transaction-pooling PgBouncer) leaves the lease as the only signal.
ALTER TABLE log_exports ADD COLUMN lease_lock_key bigint;

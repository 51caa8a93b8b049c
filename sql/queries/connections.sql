-- Session settings of logexport's own connections.

-- name: keep_connection_alive
-- The server notices a vanished peer of this connection within about 25 s (keepalive probes
-- when idle, a bound on unacknowledged data otherwise), so the liveness lock the connection
-- holds does not outlive a worker whose machine disappeared by the system's default hours.
SELECT set_config('tcp_keepalives_idle', '10', false),
       set_config('tcp_keepalives_interval', '5', false),
       set_config('tcp_keepalives_count', '3', false),
       set_config('tcp_user_timeout', '25000', false);

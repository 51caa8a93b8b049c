-- The export and its requester: the emails and the download links read it.

-- name: delivery_export
SELECT e.*,
       u.email AS requester_email, u.full_name AS requester_name
FROM log_exports e
JOIN users u ON u.id = e.requested_by
WHERE e.id = $1;

-- Fills the incident schema. The row count comes from the setting
-- `pgshift.rows` (psql: SET pgshift.rows = 100000; \i incident_fill.sql).
INSERT INTO scripts (account_id, name, body, created_at)
SELECT g % 1000, 'script ' || g, repeat('x', 60), now() - (g || ' seconds')::interval
FROM generate_series(1, current_setting('pgshift.rows')::int) AS g;

INSERT INTO archived_scripts (id, account_id, name, body, created_at)
SELECT 2000000000 + g, g % 1000, 'archived ' || g, repeat('y', 60), now() - interval '1 year'
FROM generate_series(1, current_setting('pgshift.rows')::int / 2) AS g;

INSERT INTO script_runs (script_id, status, started_at)
SELECT 1 + (g % current_setting('pgshift.rows')::int), CASE WHEN g % 3 = 0 THEN 'failed' ELSE 'ok' END, now()
FROM generate_series(1, current_setting('pgshift.rows')::int * 2) AS g;

ANALYZE scripts;
ANALYZE script_runs;
ANALYZE archived_scripts;

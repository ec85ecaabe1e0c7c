-- The incident migration: scripts.id is an int4 serial running out.
-- pgshift also widens script_runs.script_id (it references scripts.id),
-- rebuilds the primary key, the foreign key, the index and the view.
-- archived_scripts.id is widened in the same migration: the all_scripts view
-- unions both tables, and mixed int4/int8 branches would stop the planner
-- from pushing `WHERE id = …` into them (the outage behind pgshift).
-- Run with `pgshift apply` (online); run by another tool these would rewrite
-- the tables under an exclusive lock, which `pgshift lint` reports.
-- pgshift:ignore column-type-rewrite, missing-lock-timeout, missing-statement-timeout
ALTER TABLE scripts ALTER COLUMN id TYPE bigint;
-- pgshift:ignore column-type-rewrite, missing-lock-timeout, missing-statement-timeout
ALTER TABLE archived_scripts ALTER COLUMN id TYPE bigint;

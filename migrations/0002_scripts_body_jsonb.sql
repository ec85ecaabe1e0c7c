-- Any column type change runs online, not only integer widenings: the
-- scripts' bodies become jsonb. Both tables of the all_scripts view change
-- together (a UNION of jsonb and text would not hold). pgshift copies each
-- table with the new type, converting every row and every write made
-- meanwhile with the USING expression, and swaps the copies in at cutover.
-- Until finalize, `pgshift rollback` swaps the originals back, with writes
-- made since converted back to text (jsonb has a cast to text).
-- pgshift:ignore column-type-rewrite, missing-lock-timeout, missing-statement-timeout
ALTER TABLE scripts ALTER COLUMN body TYPE jsonb USING to_jsonb(body);
-- pgshift:ignore column-type-rewrite, missing-lock-timeout, missing-statement-timeout
ALTER TABLE archived_scripts ALTER COLUMN body TYPE jsonb USING to_jsonb(body);

-- The schema of the incident behind pgshift: `scripts.id` is an int4 serial
-- close to exhaustion, `script_runs.script_id` references it, and the view
-- `all_scripts` unions it with `archived_scripts`, whose id stays int4.
CREATE TABLE scripts (
    id          serial PRIMARY KEY,
    account_id  int NOT NULL,
    name        text,
    body        text,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX scripts_account_id_idx ON scripts (account_id);

CREATE TABLE script_runs (
    id          bigserial PRIMARY KEY,
    script_id   int NOT NULL REFERENCES scripts (id) ON DELETE CASCADE,
    status      text,
    started_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX script_runs_script_id_idx ON script_runs (script_id);

CREATE TABLE archived_scripts (
    id          int PRIMARY KEY,
    account_id  int NOT NULL,
    name        text,
    body        text,
    created_at  timestamptz
);

CREATE VIEW all_scripts AS
    SELECT id, account_id, name, body, created_at FROM scripts
    UNION ALL
    SELECT id, account_id, name, body, created_at FROM archived_scripts;

#!/bin/bash
# Lets the replica container stream from the primary (password auth on the
# compose network only).
set -e
echo "host replication all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
psql -v ON_ERROR_STOP=1 -U postgres -c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements"

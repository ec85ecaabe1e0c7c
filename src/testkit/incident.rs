//! The incident schema (`testdata/incident.sql`) and its loader.

use tokio_postgres::Client;

pub const SCHEMA: &str = include_str!("../../testdata/incident.sql");
pub const FILL: &str = include_str!("../../testdata/incident_fill.sql");

/// Creates the incident schema and fills it with `rows` scripts
/// (half as many archived scripts, twice as many runs).
pub async fn load(client: &Client, rows: i64) -> Result<(), tokio_postgres::Error> {
    client.batch_execute(SCHEMA).await?;
    client
        .execute(
            "SELECT set_config('pgshift.rows', $1, false)",
            &[&rows.to_string()],
        )
        .await?;
    client.batch_execute(FILL).await
}

/// Moves the `scripts` id sequence to `value`, e.g. close to 2^31 to show exhaustion.
pub async fn set_scripts_sequence(
    client: &Client,
    value: i64,
) -> Result<(), tokio_postgres::Error> {
    client
        .execute(
            "SELECT setval(pg_get_serial_sequence('scripts', 'id'), $1)",
            &[&value],
        )
        .await
        .map(|_| ())
}

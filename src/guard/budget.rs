//! The connection budget: pgshift must never be what exhausts a database.

use tokio_postgres::Client;

use super::Limits;
use crate::error::{Error, Result};

/// Connection slots as the server counts them.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Headroom {
    pub max_connections: i64,
    /// `superuser_reserved_connections` + `reserved_connections` (PG16+).
    pub reserved: i64,
    /// Client sessions now connected (pgshift's included).
    pub in_use: i64,
}

impl Headroom {
    /// Slots an ordinary role can still take.
    pub fn free(&self) -> i64 {
        self.max_connections - self.reserved - self.in_use
    }

    pub async fn read(client: &Client) -> Result<Headroom> {
        let row = client
            .query_one(
                "SELECT current_setting('max_connections')::int8,
                        current_setting('superuser_reserved_connections')::int8
                          + COALESCE(current_setting('reserved_connections', true)::int8, 0),
                        (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')",
                &[],
            )
            .await
            .map_err(Error::db("could not read connection headroom"))?;
        Ok(Headroom {
            max_connections: row.get(0),
            reserved: row.get(1),
            in_use: row.get(2),
        })
    }
}

/// Refuses (exit 1) when opening `more` connections would leave fewer free
/// slots than the limit. `client` is one of pgshift's, already counted.
pub async fn check_budget(client: &Client, limits: &Limits, more: i64) -> Result<Headroom> {
    let h = Headroom::read(client).await?;
    let min_free = limits.min_free(h.max_connections);
    let after = h.free() - more;
    if after < min_free {
        return Err(Error::Refused(format!(
            "not enough connection headroom: max_connections {}, reserved {}, in use {} (pgshift's 1 included), \
             free {}; pgshift needs {more} more and leaves at least {min_free} free (--min-free-connections). \
             Nothing was changed",
            h.max_connections,
            h.reserved,
            h.in_use,
            h.free()
        )));
    }
    Ok(h)
}

//! Marking the copy engine's rows committed while their pages are still
//! dirty from the insert.
//!
//! The first reader of a row after its transaction committed marks it
//! committed on its page (a hint bit), and so dirties the page again. Read
//! right after its batch, a page is still in shared buffers and still dirty,
//! and the mark costs no write. Left for later, the first index build's
//! scan dirties every page of the copy (a fresh 1M-row table's first scan
//! after a checkpoint dirtied all its 13,334 pages), and so do ANALYZE and
//! the foreign key's validation: gigabytes at 10M rows, written back
//! outside any paced batch, in the seconds where the benchmark's
//! application stalled most.
//!
//! Done while the commit probe paces the copy (the defaults); at full speed
//! it cost more than it saved (see `backfill::run_part`).
//!
//! This is why the copy's batches commit synchronously (`local`): the hint of an
//! asynchronous commit waits until the WAL is flushed past the latest
//! asynchronous commit among the 32 transactions its commit status shares
//! a slot with, which, while batches follow each other, is nearly always
//! the batch just committed (a test measured 254 of 308 pages left
//! unmarked that way).

use tokio_postgres::Client;

use crate::names::literal;
use crate::plan::copy::CopyTable;

/// A page number past any table's last (block numbers are 32-bit).
const NO_PAGE: i64 = u32::MAX as i64;

pub struct HintBits {
    /// Returns the copy's length in pages and reads its rows from page `$1` on.
    sql: String,
    /// Where the last committed batch began.
    from: i64,
}

impl HintBits {
    pub fn new(c: &CopyTable) -> HintBits {
        // A TID range scan reads only those pages; before Postgres 14, which
        // has none, the one-time filter skips the scan rather than read the
        // whole table.
        let sql = format!(
            "SELECT pg_relation_size({}::regclass) / current_setting('block_size')::int8, \
                    (SELECT count(*) FROM ONLY {copy} \
                     WHERE current_setting('server_version_num')::int >= 140000 \
                       AND ctid >= format('(%s,0)', $1::int8)::tid)",
            literal(&c.qualified_new()),
            copy = c.qualified_new()
        );
        HintBits { sql, from: NO_PAGE }
    }

    /// At the start of a batch, in its transaction: reads the rows of the
    /// batch before it, and returns the page this batch begins at.
    pub async fn before_batch(&self, client: &Client) -> Result<i64, tokio_postgres::Error> {
        let row = client.query_one(&self.sql, &[&self.from]).await?;
        // The page before may have had room for the batch's first rows.
        Ok((row.get::<_, i64>(0) - 1).max(0))
    }

    /// The batch that began at `page` committed.
    pub fn committed(&mut self, page: i64) {
        self.from = page;
    }

    /// After the last batch: reads its rows.
    pub async fn finish(&mut self, client: &Client) -> Result<(), tokio_postgres::Error> {
        client.query_one(&self.sql, &[&self.from]).await?;
        self.from = NO_PAGE;
        Ok(())
    }
}

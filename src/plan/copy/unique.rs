//! Unique indexes other than the primary key on a copy: what makes two rows
//! collide, for the duplicate search before the build and the replays'
//! evictions.

use serde::{Deserialize, Serialize};

/// What makes two rows collide in a unique index other than the primary key.
///
/// The copy takes each key range at its own snapshot, so a unique value that
/// moves from one row to another between two batches can reach the copy
/// twice: the row it left is copied before the move, the row it went to
/// after. The one of the two that is out of date has its key in the log,
/// since it changed after it was copied. So before the index is built every
/// row of a duplicate value leaves the copy and its key goes to the log, and
/// each replay evicts, and logs again, the rows its fresh rows collide with.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UniqueKey {
    /// Key columns and expressions, unqualified.
    pub keys: Vec<String>,
    /// A partial index's predicate, unqualified.
    pub predicate: Option<String>,
}

impl UniqueKey {
    fn key_list(&self) -> String {
        self.keys
            .iter()
            .map(|k| format!("({k})"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Rows of the table in the `FROM` that hold a key some row of `other`
    /// holds (rows whose keys have a NULL collide with none).
    pub fn collides_with(&self, other: &str) -> String {
        let keys = self.key_list();
        let row = if self.keys.len() == 1 {
            keys.clone()
        } else {
            format!("({keys})")
        };
        match &self.predicate {
            Some(p) => format!("({p}) AND {row} IN (SELECT {keys} FROM {other} WHERE ({p}))"),
            None => format!("{row} IN (SELECT {keys} FROM {other})"),
        }
    }

    /// The primary key (`key`, quoted columns) of every row of `table`
    /// whose unique key another row holds too.
    pub fn duplicates(&self, table: &str, key: &[String]) -> String {
        let mut filter: Vec<String> = self
            .keys
            .iter()
            .map(|k| format!("({k}) IS NOT NULL"))
            .collect();
        if let Some(p) = &self.predicate {
            filter.insert(0, format!("({p})"));
        }
        let rows: Vec<String> = key
            .iter()
            .map(|k| format!("unnest(array_agg({k}))"))
            .collect();
        format!(
            "SELECT {} FROM {table} WHERE {} GROUP BY {} HAVING count(*) > 1",
            rows.join(", "),
            filter.join(" AND "),
            self.key_list()
        )
    }
}

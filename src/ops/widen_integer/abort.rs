//! Rollback before cutover: drop everything pgshift created and leave the
//! tables as they were. The original columns never stopped being the live
//! ones, so there is nothing to copy back.

use super::*;

/// rollback before cutover: drop everything pgshift created, leave the table as it was.
///
/// Order matters under live writes: constraints on the shadow columns go
/// before the sync trigger that fills them, or an insert in between would
/// violate them.
pub fn abort(plan: &Plan) -> Vec<Step> {
    let mut steps = Vec::new();
    for fk in &plan.foreign_keys {
        steps.push(step(
            "rollback",
            format!("drop the rebuilt foreign key {}", fk.shadow),
            format!(
                "ALTER TABLE {} DROP CONSTRAINT IF EXISTS {}",
                fk.table,
                quote(&fk.shadow)
            ),
            SHARE_ROW_EXCLUSIVE,
            Action::Ddl { skip_if: None },
        ));
    }
    for t in &plan.tables {
        let names: Vec<String> = t
            .checks
            .iter()
            .map(|c| c.shadow.clone())
            .chain(
                t.columns
                    .iter()
                    .filter(|c| c.not_null && !c.shadow_not_null)
                    .map(|c| c.not_null_check.clone()),
            )
            .collect();
        if !names.is_empty() {
            let drops: Vec<String> = names
                .iter()
                .map(|n| format!("DROP CONSTRAINT IF EXISTS {}", quote(n)))
                .collect();
            steps.push(step(
                "rollback",
                format!("drop the shadow checks of {}", t.display()),
                format!("ALTER TABLE {} {}", t.qualified(), drops.join(", ")),
                ACCESS_EXCLUSIVE,
                Action::Ddl { skip_if: None },
            ));
        }
    }
    for t in &plan.tables {
        steps.push(step(
            "rollback",
            format!("drop the sync trigger of {}", t.display()),
            sync::drop_triggers(t, &t.sync_trigger)
                .into_iter()
                .chain(sync::drop_functions(&t.sync_function))
                .chain(conversion_drops(t))
                .collect::<Vec<_>>()
                .join("; "),
            // DROP TRIGGER takes ACCESS EXCLUSIVE, briefly.
            ACCESS_EXCLUSIVE,
            Action::Ddl { skip_if: None },
        ));
        for ix in &t.indexes {
            steps.push(step(
                "rollback",
                format!("drop the shadow index {}", ix.shadow),
                format!(
                    "DROP INDEX CONCURRENTLY IF EXISTS {}",
                    qualified(&t.schema, &ix.shadow)
                ),
                SHARE_UPDATE_EXCLUSIVE,
                Action::DropIndex,
            ));
        }
        let n = t.columns.len();
        let drop_sql = drop_columns(t, |c| &c.shadow);
        steps.push(step(
            "rollback",
            format!(
                "drop the shadow column{} of {}",
                if n > 1 { "s" } else { "" },
                t.display()
            ),
            drop_sql,
            ACCESS_EXCLUSIVE,
            Action::Ddl { skip_if: None },
        ));
    }
    steps
}

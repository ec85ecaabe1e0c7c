//! Each statement of an ordinary migration, in the online form pgshift runs.

use sqlparser::ast::{
    AlterColumnOperation, AlterTableOperation, ColumnOption, CreateIndex, Statement,
    TableConstraint,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use crate::lint::rules::volatile_default::is_volatile;
use crate::names::{quote, shadow};

/// One thing the runner does for a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// DDL under lock_timeout, retried on lock timeouts.
    Ddl(String),
    /// `CREATE [UNIQUE] INDEX CONCURRENTLY`; an invalid index left by a failed
    /// build under the same name is dropped and built again.
    BuildIndex { sql: String, name: Option<String> },
    /// Fills a new column with its volatile default in batches of heap pages.
    Backfill {
        table: String,
        column: String,
        expr: String,
    },
    /// The statements of a file that manages its own transaction, run as
    /// written in one transaction, retried whole on lock timeouts.
    Transaction(Vec<String>),
}

/// A statement and how it runs.
#[derive(Debug, Clone)]
pub struct Planned {
    pub line: u64,
    pub original: String,
    /// Why it is rewritten, when it is.
    pub rewrite: Option<&'static str>,
    pub actions: Vec<Action>,
}

/// Why a statement cannot run.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub line: u64,
    pub message: String,
}

pub struct Options {
    pub allow_rewrite: bool,
    pub allow_unparsed: bool,
}

/// The online form of one statement.
pub fn classify(line: u64, text: &str, options: &Options) -> Result<Planned, Refusal> {
    let planned = |rewrite: Option<&'static str>, actions: Vec<Action>| Planned {
        line,
        original: text.to_string(),
        rewrite,
        actions,
    };
    let parsed = match Parser::parse_sql(&PostgreSqlDialect {}, text) {
        Ok(mut v) if v.len() == 1 => v.remove(0),
        _ if options.allow_unparsed => return Ok(planned(Some("not parsed: run verbatim (--allow-unparsed)"), vec![Action::Ddl(text.into())])),
        Err(e) => {
            return Err(Refusal {
                line,
                message: format!("pgshift could not parse this statement ({e}); review it and pass --allow-unparsed to run it verbatim"),
            })
        }
        Ok(_) => return Err(Refusal { line, message: "expected one statement".into() }),
    };
    match &parsed {
        Statement::CreateIndex(ix) if !ix.concurrently => Ok(planned(
            Some("CREATE INDEX → CREATE INDEX CONCURRENTLY"),
            vec![build_index(ix)],
        )),
        Statement::CreateIndex(ix) => Ok(planned(None, vec![build_index(ix)])),
        Statement::AlterTable(alter) => {
            let table = alter.name.to_string();
            let mut actions = Vec::new();
            let mut rewrite = None;
            for op in &alter.operations {
                match op {
                    AlterTableOperation::AddConstraint {
                        constraint,
                        not_valid: false,
                    } if matches!(
                        constraint,
                        TableConstraint::ForeignKey(_) | TableConstraint::Check(_)
                    ) =>
                    {
                        let Some(name) = constraint_name(constraint) else {
                            return Err(Refusal {
                                line,
                                message: "name the constraint (ADD CONSTRAINT name …) so pgshift can validate it separately".into(),
                            });
                        };
                        actions.push(Action::Ddl(format!(
                            "ALTER TABLE {table} ADD {constraint} NOT VALID"
                        )));
                        actions.push(Action::Ddl(format!(
                            "ALTER TABLE {table} VALIDATE CONSTRAINT {}",
                            quote(&name)
                        )));
                        rewrite = Some("constraint → NOT VALID, then VALIDATE CONSTRAINT");
                    }
                    AlterTableOperation::AddConstraint { constraint, .. }
                        if matches!(
                            constraint,
                            TableConstraint::Unique(_) | TableConstraint::PrimaryKey(_)
                        ) && !text.to_lowercase().contains("using index") =>
                    {
                        let (kind, cols) = match constraint {
                            TableConstraint::Unique(u) => (
                                "UNIQUE",
                                u.columns.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
                            ),
                            TableConstraint::PrimaryKey(p) => (
                                "PRIMARY KEY",
                                p.columns.iter().map(|c| c.to_string()).collect(),
                            ),
                            _ => unreachable!(),
                        };
                        let Some(name) = constraint_name(constraint) else {
                            return Err(Refusal {
                                line,
                                message: "name the constraint (ADD CONSTRAINT name …) so pgshift can build its index first".into(),
                            });
                        };
                        actions.push(Action::BuildIndex {
                            sql: format!(
                                "CREATE UNIQUE INDEX CONCURRENTLY {} ON {table} ({})",
                                quote(&name),
                                cols.join(", ")
                            ),
                            name: Some(name.clone()),
                        });
                        actions.push(Action::Ddl(format!(
                            "ALTER TABLE {table} ADD CONSTRAINT {} {kind} USING INDEX {}",
                            quote(&name),
                            quote(&name)
                        )));
                        rewrite = Some(
                            "unique/primary key → unique index concurrently, then USING INDEX",
                        );
                    }
                    AlterTableOperation::AlterColumn {
                        column_name,
                        op: AlterColumnOperation::SetNotNull,
                    } => {
                        let check = shadow("nn", &format!("{}_{}", alter.name, column_name.value));
                        actions.push(Action::Ddl(format!(
                            "ALTER TABLE {table} ADD CONSTRAINT {} CHECK ({column_name} IS NOT NULL) NOT VALID",
                            quote(&check)
                        )));
                        actions.push(Action::Ddl(format!(
                            "ALTER TABLE {table} VALIDATE CONSTRAINT {}",
                            quote(&check)
                        )));
                        actions.push(Action::Ddl(format!(
                            "ALTER TABLE {table} ALTER COLUMN {column_name} SET NOT NULL"
                        )));
                        actions.push(Action::Ddl(format!(
                            "ALTER TABLE {table} DROP CONSTRAINT {}",
                            quote(&check)
                        )));
                        rewrite = Some("SET NOT NULL → validated CHECK first, then SET NOT NULL without a scan");
                    }
                    AlterTableOperation::AddColumn {
                        column_def,
                        if_not_exists,
                        ..
                    } => {
                        let default = column_def.options.iter().find_map(|o| match &o.option {
                            ColumnOption::Default(e) => Some(e.to_string()),
                            _ => None,
                        });
                        match default.filter(|d| is_volatile(d)) {
                            Some(expr) => {
                                let mut bare = column_def.clone();
                                bare.options
                                    .retain(|o| !matches!(o.option, ColumnOption::Default(_)));
                                let ine = if *if_not_exists { "IF NOT EXISTS " } else { "" };
                                actions.push(Action::Ddl(format!(
                                    "ALTER TABLE {table} ADD COLUMN {ine}{bare}"
                                )));
                                // The default first: rows inserted from now on get it; the backfill does the rest.
                                actions.push(Action::Ddl(format!(
                                    "ALTER TABLE {table} ALTER COLUMN {} SET DEFAULT {expr}",
                                    column_def.name
                                )));
                                actions.push(Action::Backfill {
                                    table: table.clone(),
                                    column: column_def.name.to_string(),
                                    expr,
                                });
                                rewrite = Some("ADD COLUMN with a volatile default → add, set default, batched backfill");
                            }
                            None => actions.push(Action::Ddl(format!("ALTER TABLE {table} {op}"))),
                        }
                    }
                    AlterTableOperation::AlterColumn {
                        column_name,
                        op: AlterColumnOperation::SetDataType { data_type, .. },
                    } if !options.allow_rewrite => {
                        let hint = "put column type changes in a migration file of their own: pgshift runs those online \
                                    (a copy swapped in at cutover, or the plain ALTER when Postgres changes only its catalog), \
                                    or pass --allow-rewrite to accept the blocking rewrite";
                        return Err(Refusal {
                            line,
                            message: format!("changing {table}.{column_name} to {data_type} rewrites the table under an exclusive lock; {hint}"),
                        });
                    }
                    other => actions.push(Action::Ddl(format!("ALTER TABLE {table} {other}"))),
                }
            }
            Ok(planned(rewrite, actions))
        }
        _ => Ok(planned(None, vec![Action::Ddl(text.to_string())])),
    }
}

fn build_index(ix: &CreateIndex) -> Action {
    let mut concurrent = ix.clone();
    concurrent.concurrently = true;
    Action::BuildIndex {
        sql: concurrent.to_string(),
        name: ix.name.as_ref().map(last),
    }
}

fn constraint_name(c: &TableConstraint) -> Option<String> {
    let name = match c {
        TableConstraint::ForeignKey(f) => f.name.as_ref(),
        TableConstraint::Check(k) => k.name.as_ref(),
        TableConstraint::Unique(u) => u.name.as_ref(),
        TableConstraint::PrimaryKey(p) => p.name.as_ref(),
        _ => None,
    }?;
    Some(crate::names::fold(name))
}

/// The last part of a name, folded as Postgres does.
fn last(name: &sqlparser::ast::ObjectName) -> String {
    match name.0.last() {
        Some(sqlparser::ast::ObjectNamePart::Identifier(i)) => crate::names::fold(i),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(sql: &str) -> Planned {
        classify(
            1,
            sql,
            &Options {
                allow_rewrite: false,
                allow_unparsed: false,
            },
        )
        .unwrap()
    }

    fn sqls(p: &Planned) -> Vec<String> {
        p.actions
            .iter()
            .map(|a| match a {
                Action::Ddl(s) => s.clone(),
                Action::BuildIndex { sql, .. } => sql.clone(),
                Action::Backfill {
                    table,
                    column,
                    expr,
                } => format!("backfill {table}.{column} = {expr}"),
                Action::Transaction(s) => s.join("; "),
            })
            .collect()
    }

    #[test]
    fn each_dangerous_form_gets_its_online_form() {
        assert_eq!(
            sqls(&run("CREATE INDEX i ON t (a)")),
            ["CREATE INDEX CONCURRENTLY i ON t(a)"]
        );
        assert_eq!(
            sqls(&run(
                "ALTER TABLE t ADD CONSTRAINT t_fk FOREIGN KEY (a) REFERENCES u (id)"
            )),
            [
                "ALTER TABLE t ADD CONSTRAINT t_fk FOREIGN KEY (a) REFERENCES u(id) NOT VALID",
                "ALTER TABLE t VALIDATE CONSTRAINT \"t_fk\""
            ]
        );
        assert_eq!(
            sqls(&run("ALTER TABLE t ALTER COLUMN a SET NOT NULL")),
            [
                "ALTER TABLE t ADD CONSTRAINT \"pgshift_nn_t_a\" CHECK (a IS NOT NULL) NOT VALID",
                "ALTER TABLE t VALIDATE CONSTRAINT \"pgshift_nn_t_a\"",
                "ALTER TABLE t ALTER COLUMN a SET NOT NULL",
                "ALTER TABLE t DROP CONSTRAINT \"pgshift_nn_t_a\"",
            ]
        );
        assert_eq!(
            sqls(&run("ALTER TABLE t ADD CONSTRAINT t_a_key UNIQUE (a)")),
            [
                "CREATE UNIQUE INDEX CONCURRENTLY \"t_a_key\" ON t (a)",
                "ALTER TABLE t ADD CONSTRAINT \"t_a_key\" UNIQUE USING INDEX \"t_a_key\""
            ]
        );
        assert_eq!(
            sqls(&run(
                "ALTER TABLE t ADD COLUMN token uuid DEFAULT gen_random_uuid()"
            )),
            [
                "ALTER TABLE t ADD COLUMN token UUID",
                "ALTER TABLE t ALTER COLUMN token SET DEFAULT gen_random_uuid()",
                "backfill t.token = gen_random_uuid()",
            ]
        );
        assert_eq!(
            sqls(&run("ALTER TABLE t ADD COLUMN n int DEFAULT 0")),
            ["ALTER TABLE t ADD COLUMN n INT DEFAULT 0"]
        );
    }

    #[test]
    fn rewrites_and_unparsed_statements_are_refused_unless_allowed() {
        let strict = Options {
            allow_rewrite: false,
            allow_unparsed: false,
        };
        let err = classify(7, "ALTER TABLE t ALTER COLUMN a TYPE text", &strict).unwrap_err();
        assert_eq!(err.line, 7);
        assert!(
            err.message.contains("rewrites the table"),
            "{}",
            err.message
        );
        assert!(classify(1, "REINDEX INDEX CONCURRENTLY i", &strict).is_err());
        let lax = Options {
            allow_rewrite: true,
            allow_unparsed: true,
        };
        assert!(classify(1, "ALTER TABLE t ALTER COLUMN a TYPE text", &lax).is_ok());
        assert_eq!(
            sqls(&classify(1, "REINDEX INDEX CONCURRENTLY i", &lax).unwrap()),
            ["REINDEX INDEX CONCURRENTLY i"]
        );
    }
}

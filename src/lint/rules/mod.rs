//! One file per rule; the file name is the rule's name with `_` for `-`.

use sqlparser::ast::{ObjectName, Statement};

mod blocking_index_build;
mod column_type_rewrite;
mod concurrently_in_transaction;
mod constraint_without_not_valid;
mod drop_column;
mod drop_table;
mod integer_primary_key;
mod missing_lock_timeout;
mod rename;
mod set_not_null;
mod truncate;
mod unique_constraint_lock;
mod unparsed_statement;
pub mod volatile_default;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Warning,
    Error,
}

/// What a rule sees of one statement.
pub struct Context<'a> {
    /// Parsed statement, when sqlparser could parse it.
    pub statement: Option<&'a Statement>,
    /// The statement's source text.
    pub text: &'a str,
    /// Inside an explicit BEGIN … COMMIT.
    pub in_transaction: bool,
    /// Tables created earlier in the same file (new tables take no traffic yet).
    pub created_here: &'a [String],
    /// A `SET lock_timeout` came earlier in the file.
    pub lock_timeout_set: bool,
}

impl Context<'_> {
    /// Whether `name` is a table created earlier in this file.
    pub fn is_new_table(&self, name: &ObjectName) -> bool {
        let n = last(name);
        self.created_here.contains(&n)
    }
}

/// The last part of a name, folded as Postgres does.
pub fn last(name: &ObjectName) -> String {
    match name.0.last() {
        Some(sqlparser::ast::ObjectNamePart::Identifier(i)) => crate::names::fold(i),
        _ => String::new(),
    }
}

/// A rule's verdict on one statement.
pub struct Hit {
    pub message: String,
    /// The online form pgshift would run, or what to do instead.
    pub suggestion: String,
}

pub struct Rule {
    pub name: &'static str,
    pub severity: Severity,
    pub check: fn(&Context) -> Vec<Hit>,
}

pub const RULES: &[Rule] = &[
    blocking_index_build::RULE,
    column_type_rewrite::RULE,
    concurrently_in_transaction::RULE,
    constraint_without_not_valid::RULE,
    drop_column::RULE,
    drop_table::RULE,
    integer_primary_key::RULE,
    missing_lock_timeout::RULE,
    rename::RULE,
    set_not_null::RULE,
    truncate::RULE,
    unique_constraint_lock::RULE,
    unparsed_statement::RULE,
    volatile_default::RULE,
];

/// The ALTER TABLE operations of a statement, with the table name.
pub fn alter_ops<'a>(
    ctx: &Context<'a>,
) -> Option<(&'a ObjectName, &'a [sqlparser::ast::AlterTableOperation])> {
    match ctx.statement? {
        Statement::AlterTable(a) => Some((&a.name, a.operations.as_slice())),
        _ => None,
    }
}

/// Whether a statement takes an ACCESS EXCLUSIVE (or SHARE ROW EXCLUSIVE) lock on an existing table.
pub fn takes_blocking_lock(ctx: &Context) -> bool {
    match ctx.statement {
        Some(Statement::AlterTable(a)) => !ctx.is_new_table(&a.name),
        Some(Statement::CreateIndex(i)) => !i.concurrently && !ctx.is_new_table(&i.table_name),
        Some(Statement::Drop { .. }) | Some(Statement::Truncate(_)) => true,
        _ => false,
    }
}

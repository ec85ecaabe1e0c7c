//! One file per rule; the file name is the rule's name with `_` for `-`.
//! Rules read Postgres's own parse tree (pg_query): what Postgres runs is
//! what they see.

use pg_query::protobuf::{self as pb, AlterTableType, ConstrType};
use pg_query::{NodeEnum, NodeRef};

mod add_required_column;
mod blocking_index_build;
mod blocking_index_drop;
mod blocking_reindex;
mod column_type_rewrite;
mod concurrently_in_transaction;
mod constraint_without_not_valid;
mod drop_column;
mod drop_schema;
mod drop_table;
mod integer_foreign_key;
mod integer_primary_key;
mod lock_held_during_slow_work;
mod lock_table;
mod missing_lock_timeout;
mod missing_statement_timeout;
mod prefer_identity;
mod prefer_jsonb;
mod prefer_text_over_char;
mod prefer_text_over_varchar;
mod prefer_timestamptz;
mod rename;
mod set_not_null;
mod table_rewrite;
mod truncate;
mod unique_constraint_lock;
mod unparsed_statement;
pub mod volatile_default;
mod whole_table_write;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Warning,
    Error,
}

/// What a rule sees of one statement.
pub struct Context<'a> {
    /// The statement as Postgres's parser reads it; None when it rejects it.
    pub statement: Option<&'a NodeEnum>,
    /// Postgres's reason when it rejects the statement.
    pub parse_error: Option<&'a str>,
    /// The statement's source text.
    pub text: &'a str,
    /// Inside an explicit BEGIN … COMMIT.
    pub in_transaction: bool,
    /// Tables created earlier in the same file (new tables take no traffic yet).
    pub created_here: &'a [String],
    /// A `SET lock_timeout` came earlier in the file.
    pub lock_timeout_set: bool,
    /// A `SET statement_timeout` came earlier in the file.
    pub statement_timeout_set: bool,
    /// Inside a transaction block: the earlier statement of it that took a
    /// lock blocking writes on an existing table (its line, the table).
    pub lock_held: Option<&'a (u64, String)>,
    /// (table, column) proven NOT NULL by a validated CHECK earlier in the file.
    pub not_null_proven: &'a [(String, String)],
}

impl Context<'_> {
    /// Whether `table` was created earlier in this file.
    pub fn is_new_table(&self, table: &str) -> bool {
        self.created_here.iter().any(|t| t == table)
    }

    /// The ALTER TABLE's table and commands, for an existing table.
    pub fn alter_existing(&self) -> Option<(String, Vec<&pb::AlterTableCmd>)> {
        let (table, cmds) = alter_table(self.statement?)?;
        (!self.is_new_table(&table)).then_some((table, cmds))
    }
}

/// The ALTER TABLE's table (as written, folded) and its commands.
pub fn alter_table(stmt: &NodeEnum) -> Option<(String, Vec<&pb::AlterTableCmd>)> {
    let NodeEnum::AlterTableStmt(a) = stmt else {
        return None;
    };
    if a.objtype != pb::ObjectType::ObjectTable as i32 {
        return None;
    }
    let cmds = a
        .cmds
        .iter()
        .filter_map(|n| match n.node.as_ref() {
            Some(NodeEnum::AlterTableCmd(c)) => Some(&**c),
            _ => None,
        })
        .collect();
    Some((relation(a.relation.as_ref()), cmds))
}

pub fn is(cmd: &pb::AlterTableCmd, t: AlterTableType) -> bool {
    cmd.subtype == t as i32
}

/// `schema.name` or `name`.
pub fn relation(rv: Option<&pb::RangeVar>) -> String {
    match rv {
        Some(r) if !r.schemaname.is_empty() => format!("{}.{}", r.schemaname, r.relname),
        Some(r) => r.relname.clone(),
        None => String::new(),
    }
}

/// The names of a list of `String` nodes, joined by dots.
pub fn dotted(names: &[pb::Node]) -> String {
    names
        .iter()
        .filter_map(|n| match n.node.as_ref() {
            Some(NodeEnum::String(s)) => Some(s.sval.clone()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// A column definition's type: its last name (`int4`, `varchar`, `serial`)
/// and its integer modifiers.
pub fn type_of(cd: &pb::ColumnDef) -> Option<(String, Vec<i32>)> {
    type_name(cd.type_name.as_ref()?)
}

pub fn type_name(t: &pb::TypeName) -> Option<(String, Vec<i32>)> {
    let name = match t.names.last()?.node.as_ref()? {
        NodeEnum::String(s) => s.sval.to_lowercase(),
        _ => return None,
    };
    let mods = t
        .typmods
        .iter()
        .filter_map(|m| match m.node.as_ref() {
            Some(NodeEnum::AConst(c)) => match c.val.as_ref() {
                Some(pb::a_const::Val::Ival(i)) => Some(i.ival),
                _ => None,
            },
            _ => None,
        })
        .collect();
    Some((name, mods))
}

/// How a user would write the type back.
pub fn display_type(name: &str, mods: &[i32]) -> String {
    let base = match name {
        "int2" => "smallint",
        "int4" => "integer",
        "int8" => "bigint",
        "bpchar" => "char",
        "timestamp" => "timestamp",
        other => other,
    };
    if mods.is_empty() {
        base.to_string()
    } else {
        format!(
            "{base}({})",
            mods.iter()
                .map(|m| m.to_string())
                .collect::<Vec<_>>()
                .join(",")
        )
    }
}

/// The constraints written on a column definition.
pub fn column_constraints(cd: &pb::ColumnDef) -> impl Iterator<Item = &pb::Constraint> {
    cd.constraints.iter().filter_map(|n| match n.node.as_ref() {
        Some(NodeEnum::Constraint(c)) => Some(&**c),
        _ => None,
    })
}

pub fn kind(c: &pb::Constraint, k: ConstrType) -> bool {
    c.contype == k as i32
}

/// The column definitions this statement brings into existence, with their
/// table: a new table's columns and ADD COLUMN's. `existing` tells which.
pub fn new_columns<'a>(ctx: &Context<'a>) -> Vec<(String, &'a pb::ColumnDef, bool)> {
    let mut out = Vec::new();
    match ctx.statement {
        Some(NodeEnum::CreateStmt(c)) => {
            let table = relation(c.relation.as_ref());
            for e in &c.table_elts {
                if let Some(NodeEnum::ColumnDef(cd)) = e.node.as_ref() {
                    out.push((table.clone(), &**cd, false));
                }
            }
        }
        Some(stmt) => {
            if let Some((table, cmds)) = alter_table(stmt) {
                let existing = !ctx.is_new_table(&table);
                for c in cmds {
                    if is(c, AlterTableType::AtAddColumn) {
                        if let Some(NodeEnum::ColumnDef(cd)) =
                            c.def.as_ref().and_then(|d| d.node.as_ref())
                        {
                            out.push((table.clone(), &**cd, existing));
                        }
                    }
                }
            }
        }
        None => {}
    }
    out
}

/// A finding on each new column whose type `matches` (type name, modifiers):
/// the shape of the type-style rules.
pub fn columns_of_type(
    ctx: &Context,
    matches: fn(&str, &[i32]) -> bool,
    why: &str,
    suggestion: &str,
) -> Vec<Hit> {
    new_columns(ctx)
        .into_iter()
        .filter_map(|(table, cd, _)| {
            let (name, mods) = type_of(cd)?;
            matches(&name, &mods).then(|| Hit {
                message: format!(
                    "{table}.{} is {}: {why}",
                    cd.colname,
                    display_type(&name, &mods)
                ),
                suggestion: suggestion.into(),
            })
        })
        .collect()
}

/// The tables of a list of `RangeVar` nodes (TRUNCATE's, LOCK's), less
/// those created earlier in the file.
pub fn existing_tables(ctx: &Context, relations: &[pb::Node]) -> Vec<String> {
    relations
        .iter()
        .filter_map(|r| match r.node.as_ref() {
            Some(NodeEnum::RangeVar(rv)) => Some(relation(Some(rv))),
            _ => None,
        })
        .filter(|t| !ctx.is_new_table(t))
        .collect()
}

/// `integer`, `smallint` and their serials, as Postgres names them.
pub fn is_small_integer(name: &str) -> bool {
    [
        "int4",
        "int2",
        "serial",
        "serial4",
        "smallserial",
        "serial2",
    ]
    .contains(&name)
}

/// The functions an expression calls (last name, lowercase).
pub fn calls(expr: &pb::Node) -> Vec<String> {
    let Some(node) = expr.node.as_ref() else {
        return vec![];
    };
    let mut names: Vec<String> = node
        .nodes()
        .into_iter()
        .filter_map(|(n, ..)| match n {
            NodeRef::FuncCall(f) => Some(dotted(&f.funcname).rsplit('.').next()?.to_lowercase()),
            _ => None,
        })
        .collect();
    if let NodeEnum::FuncCall(f) = node {
        names.push(
            dotted(&f.funcname)
                .rsplit('.')
                .next()
                .unwrap_or_default()
                .to_lowercase(),
        );
    }
    names
}

/// The column `CHECK (col IS NOT NULL)` is about, if that is the check.
pub fn not_null_check_column(c: &pb::Constraint) -> Option<String> {
    if !kind(c, ConstrType::ConstrCheck) {
        return None;
    }
    match c.raw_expr.as_ref()?.node.as_ref()? {
        NodeEnum::NullTest(t) if t.nulltesttype == pb::NullTestType::IsNotNull as i32 => {
            match t.arg.as_ref()?.node.as_ref()? {
                NodeEnum::ColumnRef(r) => Some(dotted(&r.fields)),
                _ => None,
            }
        }
        _ => None,
    }
}

/// A lock that blocks writes (or reads and writes) on an existing table,
/// and the table: what a `lock_timeout` must bound.
pub fn blocking_lock(ctx: &Context) -> Option<String> {
    let stmt = ctx.statement?;
    let existing = |t: String| (!t.is_empty() && !ctx.is_new_table(&t)).then_some(t);
    match stmt {
        NodeEnum::AlterTableStmt(_) => {
            let (table, cmds) = alter_table(stmt)?;
            // VALIDATE CONSTRAINT, SET STATISTICS and column options take
            // SHARE UPDATE EXCLUSIVE: reads and writes go on.
            let light = cmds.iter().all(|c| {
                [
                    AlterTableType::AtValidateConstraint,
                    AlterTableType::AtSetStatistics,
                    AlterTableType::AtSetOptions,
                    AlterTableType::AtResetOptions,
                ]
                .iter()
                .any(|t| is(c, *t))
            });
            if light {
                None
            } else {
                existing(table)
            }
        }
        NodeEnum::IndexStmt(i) if !i.concurrent => existing(relation(i.relation.as_ref())),
        NodeEnum::DropStmt(d) if !d.concurrent => {
            Some(format!("the dropped {}", object_kind(d.remove_type)))
        }
        NodeEnum::TruncateStmt(t) => t.relations.first().and_then(|r| match r.node.as_ref() {
            Some(NodeEnum::RangeVar(rv)) => existing(relation(Some(rv))),
            _ => None,
        }),
        NodeEnum::LockStmt(l) if l.mode >= 5 => {
            l.relations.first().and_then(|r| match r.node.as_ref() {
                Some(NodeEnum::RangeVar(rv)) => existing(relation(Some(rv))),
                _ => None,
            })
        }
        NodeEnum::RenameStmt(r) => {
            existing(relation(r.relation.as_ref())).or(Some("the renamed object".into()))
        }
        NodeEnum::ClusterStmt(c) => existing(relation(c.relation.as_ref())),
        NodeEnum::ReindexStmt(r) if !has_option(&r.params, "concurrently") => {
            existing(relation(r.relation.as_ref())).or(Some(r.name.clone()))
        }
        NodeEnum::VacuumStmt(v) if has_option(&v.options, "full") => {
            Some("the vacuumed tables".into())
        }
        NodeEnum::CreateTrigStmt(t) => existing(relation(t.relation.as_ref())),
        _ => None,
    }
}

/// Work that takes time in proportion to a table's size.
pub fn slow_work(ctx: &Context) -> Option<&'static str> {
    let stmt = ctx.statement?;
    Some(match stmt {
        NodeEnum::UpdateStmt(_) => "an UPDATE",
        NodeEnum::DeleteStmt(_) => "a DELETE",
        NodeEnum::InsertStmt(i) if i.select_stmt.as_ref().is_some_and(|s| {
            matches!(s.node.as_ref(), Some(NodeEnum::SelectStmt(sel)) if sel.values_lists.is_empty())
        }) => "an INSERT … SELECT",
        NodeEnum::IndexStmt(_) => "an index build",
        NodeEnum::CreateTableAsStmt(_) => "a CREATE TABLE AS",
        NodeEnum::RefreshMatViewStmt(_) => "a materialized view refresh",
        NodeEnum::ClusterStmt(_) => "a CLUSTER",
        NodeEnum::ReindexStmt(_) => "a REINDEX",
        NodeEnum::VacuumStmt(_) => "a VACUUM",
        NodeEnum::AlterTableStmt(_) => {
            let (_, cmds) = alter_table(stmt)?;
            let scans = cmds.iter().any(|c| {
                is(c, AlterTableType::AtValidateConstraint)
                    || is(c, AlterTableType::AtSetNotNull)
                    || is(c, AlterTableType::AtAlterColumnType)
                    || is(c, AlterTableType::AtSetTableSpace)
                    || (is(c, AlterTableType::AtAddConstraint)
                        && matches!(c.def.as_ref().and_then(|d| d.node.as_ref()),
                            Some(NodeEnum::Constraint(k)) if !k.skip_validation
                                && (kind(k, ConstrType::ConstrForeign) || kind(k, ConstrType::ConstrCheck)
                                    || kind(k, ConstrType::ConstrUnique) || kind(k, ConstrType::ConstrPrimary))))
            });
            if !scans {
                return None;
            }
            "a scan or rewrite of the table"
        }
        _ => return None,
    })
}

/// Whether a list of `DefElem` options names `option` (REINDEX's
/// CONCURRENTLY, VACUUM's FULL), and it is not set false.
pub fn has_option(options: &[pb::Node], option: &str) -> bool {
    options.iter().any(|n| match n.node.as_ref() {
        Some(NodeEnum::DefElem(d)) if d.defname.eq_ignore_ascii_case(option) => !matches!(
            d.arg.as_ref().and_then(|a| a.node.as_ref()),
            Some(NodeEnum::Boolean(b)) if !b.boolval
        ) && !matches!(
            d.arg.as_ref().and_then(|a| a.node.as_ref()),
            Some(NodeEnum::String(s)) if ["false", "off", "0"].contains(&s.sval.to_lowercase().as_str())
        ),
        _ => false,
    })
}

pub fn object_kind(t: i32) -> &'static str {
    use pb::ObjectType as O;
    match O::try_from(t).unwrap_or(O::Undefined) {
        O::ObjectTable => "table",
        O::ObjectIndex => "index",
        O::ObjectSchema => "schema",
        O::ObjectDatabase => "database",
        O::ObjectView => "view",
        O::ObjectMatview => "materialized view",
        O::ObjectSequence => "sequence",
        O::ObjectColumn => "column",
        O::ObjectType => "type",
        O::ObjectFunction => "function",
        O::ObjectTrigger => "trigger",
        _ => "object",
    }
}

/// The names a DROP names (`schema.name`).
pub fn dropped_names(d: &pb::DropStmt) -> Vec<String> {
    d.objects
        .iter()
        .filter_map(|o| match o.node.as_ref()? {
            NodeEnum::List(l) => Some(dotted(&l.items)),
            NodeEnum::String(s) => Some(s.sval.clone()),
            _ => None,
        })
        .collect()
}

/// A rule's verdict on one statement.
pub struct Hit {
    pub message: String,
    /// The online form pgshift would run, or what to do instead.
    pub suggestion: String,
}

pub struct Rule {
    pub name: &'static str,
    /// The default; `pgshift.toml` can change it.
    pub severity: Severity,
    /// One line: what the rule catches (for SARIF and `--help`-like lists).
    pub summary: &'static str,
    pub check: fn(&Context) -> Vec<Hit>,
}

pub const RULES: &[Rule] = &[
    add_required_column::RULE,
    blocking_index_build::RULE,
    blocking_index_drop::RULE,
    blocking_reindex::RULE,
    column_type_rewrite::RULE,
    concurrently_in_transaction::RULE,
    constraint_without_not_valid::RULE,
    drop_column::RULE,
    drop_schema::RULE,
    drop_table::RULE,
    integer_foreign_key::RULE,
    integer_primary_key::RULE,
    lock_held_during_slow_work::RULE,
    lock_table::RULE,
    missing_lock_timeout::RULE,
    missing_statement_timeout::RULE,
    prefer_identity::RULE,
    prefer_jsonb::RULE,
    prefer_text_over_char::RULE,
    prefer_text_over_varchar::RULE,
    prefer_timestamptz::RULE,
    rename::RULE,
    set_not_null::RULE,
    table_rewrite::RULE,
    truncate::RULE,
    unique_constraint_lock::RULE,
    unparsed_statement::RULE,
    volatile_default::RULE,
    whole_table_write::RULE,
];

//! `CONCURRENTLY` cannot run inside a transaction block: the migration fails halfway.

use pg_query::NodeEnum;

use super::{has_option, Context, Hit, Rule, Severity};

pub const RULE: Rule = Rule {
    name: "concurrently-in-transaction",
    severity: Severity::Error,
    summary: "CREATE/DROP/REINDEX … CONCURRENTLY inside BEGIN … COMMIT",
    check,
};

fn check(ctx: &Context) -> Vec<Hit> {
    if !ctx.in_transaction {
        return vec![];
    }
    let concurrent = match ctx.statement {
        Some(NodeEnum::IndexStmt(ix)) => ix.concurrent,
        Some(NodeEnum::DropStmt(d)) => d.concurrent,
        Some(NodeEnum::ReindexStmt(r)) => has_option(&r.params, "concurrently"),
        Some(NodeEnum::AlterTableStmt(a)) => a.cmds.iter().any(|c| {
            matches!(c.node.as_ref(), Some(NodeEnum::AlterTableCmd(c))
                if c.subtype == pg_query::protobuf::AlterTableType::AtDetachPartition as i32
                    && matches!(c.def.as_ref().and_then(|d| d.node.as_ref()), Some(NodeEnum::PartitionCmd(p)) if p.concurrent))
        }),
        _ => false,
    };
    if !concurrent {
        return vec![];
    }
    vec![Hit {
        message:
            "CONCURRENTLY inside BEGIN … COMMIT fails: Postgres refuses it in a transaction block"
                .into(),
        suggestion: "move the statement out of the transaction; pgshift apply runs it on its own"
            .into(),
    }]
}

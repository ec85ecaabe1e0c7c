//! The query-plan regression check: explain the real workload before and
//! after the migration and compare the plans structurally.
//!
//! Two ways to get the "after" plans, chosen by the target:
//! - a hot standby (read only): [`rewrite`] points queries at the shadow
//!   columns that `apply --no-cutover` built and replicated;
//! - a writable clone: the migration's blocking form is rehearsed inside a
//!   transaction that is always rolled back.

pub mod diff;
pub mod rewrite;
pub mod sample;

use std::path::Path;

use serde::Serialize;
use serde_json::Value;
use tokio_postgres::Client;

use crate::error::{Error, Result};
use crate::migration::split_statements;
use crate::plan::Plan;

/// How the "after" plans were obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    Shadow,
    Rehearsal,
}

/// Where the workload comes from and what counts as a regression.
#[derive(Debug, Clone)]
pub struct Options {
    pub queries_file: Option<std::path::PathBuf>,
    pub top: i64,
    pub max_cost_ratio: f64,
    /// Explain parameterized statements as custom plans, with values sampled
    /// from the compared columns (generic plans otherwise).
    pub custom_plans: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Explained {
    pub total_cost: f64,
    pub plan: Value,
}

#[derive(Debug, Clone, Serialize)]
pub struct QueryCheck {
    pub sql: String,
    pub regressed: bool,
    pub reasons: Vec<String>,
    pub before: Option<Explained>,
    pub after: Option<Explained>,
    /// Why it could not be compared, when it could not.
    pub skipped: Option<String>,
    /// What to do about a regression, when pgshift knows.
    pub suggestion: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub method: Method,
    pub queries: Vec<QueryCheck>,
    pub regressions: usize,
}

/// The workload: statements from `--queries`, else the top statements of
/// `pg_stat_statements` on the target.
pub async fn workload(target: &Client, options: &Options) -> Result<Vec<String>> {
    if let Some(path) = &options.queries_file {
        return read_queries(path);
    }
    let installed: bool = target
        .query_one("SELECT to_regclass('pg_stat_statements') IS NOT NULL", &[])
        .await
        .map_err(Error::db("could not look for pg_stat_statements"))?
        .get(0);
    if !installed {
        return Err(Error::Usage(
            "pg_stat_statements is not available on the check target: add it to shared_preload_libraries, \
             restart, run `CREATE EXTENSION pg_stat_statements` on the primary, or pass --queries FILE"
                .into(),
        ));
    }
    let rows = target
        .query(
            "SELECT s.query FROM pg_stat_statements s
             JOIN pg_database d ON d.oid = s.dbid AND d.datname = current_database()
             WHERE s.query ~* '^\\s*(SELECT|WITH|INSERT|UPDATE|DELETE)\\M'
               AND s.query !~* '(pgshift|pg_catalog|pg_stat|information_schema)'
             ORDER BY s.total_exec_time DESC LIMIT $1",
            &[&options.top],
        )
        .await
        .map_err(Error::db("could not read pg_stat_statements"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

fn read_queries(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let statements = split_statements(&text).map_err(|(line, message)| Error::Parse {
        file: path.display().to_string(),
        line,
        message,
    })?;
    Ok(statements.into_iter().map(|s| s.text).collect())
}

/// Highest `$n` in a statement (0 when it has no parameters).
fn parameter_count(sql: &str) -> usize {
    let bytes = sql.as_bytes();
    let mut max = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' {
            let digits: String = sql[i + 1..]
                .chars()
                .take_while(|c| c.is_ascii_digit())
                .collect();
            if let Ok(n) = digits.parse::<usize>() {
                max = max.max(n);
            }
        }
        i += 1;
    }
    max
}

/// `EXPLAIN (FORMAT JSON)`. Statements with `$n` parameters get their
/// generic plan (PREPARE, force_generic_plan, EXECUTE with NULLs), the one a
/// prepared statement settles on; or, given `values`, the custom plan for them.
pub async fn explain(
    client: &Client,
    sql: &str,
    values: Option<&[String]>,
) -> std::result::Result<Value, String> {
    let n = parameter_count(sql);
    let result = if n == 0 {
        client
            .query_one(&format!("EXPLAIN (FORMAT JSON) {sql}"), &[])
            .await
    } else {
        let prepare = format!("PREPARE pgshift_check AS {sql}");
        if let Err(e) = client.batch_execute(&prepare).await {
            return Err(db_message(&e));
        }
        let (mode, args) = match values {
            Some(v) if v.len() == n => ("force_custom_plan", v.join(", ")),
            _ => ("force_generic_plan", vec!["NULL"; n].join(", ")),
        };
        let r = async {
            client
                .batch_execute(&format!("SET plan_cache_mode = {mode}"))
                .await?;
            client
                .query_one(
                    &format!("EXPLAIN (FORMAT JSON) EXECUTE pgshift_check({args})"),
                    &[],
                )
                .await
        }
        .await;
        let _ = client
            .batch_execute("DEALLOCATE pgshift_check; RESET plan_cache_mode")
            .await;
        r
    };
    result
        .map(|row| row.get::<_, Value>(0))
        .map_err(|e| db_message(&e))
}

/// Sample values for a statement's parameters when custom plans are asked for.
async fn values_for(client: &Client, sql: &str, custom: bool) -> Option<Vec<String>> {
    let n = parameter_count(sql);
    (custom && n > 0).then_some(())?;
    Some(sample::values(client, sql, n).await)
}

fn db_message(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_else(|| e.to_string())
}

/// Explains on a hot standby: original queries, then rewritten to the shadow columns.
pub async fn shadow(
    standby: &Client,
    plan: &Plan,
    queries: &[String],
    options: &Options,
) -> Result<CheckResult> {
    let max_cost_ratio = options.max_cost_ratio;
    let map = rewrite::ShadowMap::from_plan(plan);
    let mut out = Vec::new();
    for sql in queries {
        // The same values before and after, so the plans are comparable.
        let values = values_for(standby, sql, options.custom_plans).await;
        let before = explain(standby, sql, values.as_deref()).await;
        let after = match rewrite::rewrite(sql, &map) {
            Ok(rewritten) => explain(standby, &rewritten, values.as_deref()).await,
            Err(e) => Err(e),
        };
        out.push(compare(sql, before, after, plan, max_cost_ratio));
    }
    Ok(result(Method::Shadow, out))
}

/// Rehearses the blocking form of the migration in a transaction that is
/// always rolled back, and explains each query before and inside it.
pub async fn rehearsal(
    clone: &Client,
    plan: &Plan,
    queries: &[String],
    options: &Options,
) -> Result<CheckResult> {
    let max_cost_ratio = options.max_cost_ratio;
    let mut before = Vec::new();
    let mut samples = Vec::new();
    for sql in queries {
        let values = values_for(clone, sql, options.custom_plans).await;
        before.push(explain(clone, sql, values.as_deref()).await);
        samples.push(values);
    }
    clone
        .batch_execute("BEGIN")
        .await
        .map_err(Error::db("could not begin the rehearsal"))?;
    let outcome = async {
        let mut ddl = Vec::new();
        for v in plan.views.iter().rev() {
            let kind = if v.materialized {
                "MATERIALIZED VIEW"
            } else {
                "VIEW"
            };
            ddl.push(format!("DROP {kind} {}", v.qualified()));
        }
        // The conversions run with the settings the migration fixed.
        ddl.extend(crate::catalog::rehearse::apply_settings(
            &plan.conversion_settings,
        ));
        for t in &plan.tables {
            let alters: Vec<String> = t.columns.iter().map(|c| c.blocking_alter()).collect();
            ddl.push(format!(
                "ALTER TABLE {} {}",
                t.qualified(),
                alters.join(", ")
            ));
        }
        for v in &plan.views {
            let kind = if v.materialized {
                "MATERIALIZED VIEW"
            } else {
                "VIEW"
            };
            ddl.push(format!(
                "CREATE {kind} {} AS {}",
                v.qualified(),
                v.definition
            ));
            ddl.extend(v.indexes.iter().cloned());
        }
        for t in &plan.tables {
            ddl.push(format!("ANALYZE {}", t.qualified()));
        }
        for s in &ddl {
            clone
                .batch_execute(s)
                .await
                .map_err(Error::db(format!("rehearsal step failed: {s}")))?;
        }
        let mut after = Vec::new();
        for (sql, values) in queries.iter().zip(&samples) {
            // A failed EXPLAIN aborts the transaction: keep going with a savepoint.
            clone
                .batch_execute("SAVEPOINT pgshift_q")
                .await
                .map_err(Error::db("savepoint"))?;
            let r = explain(clone, sql, values.as_deref()).await;
            let _ = clone
                .batch_execute(if r.is_ok() {
                    "RELEASE pgshift_q"
                } else {
                    "ROLLBACK TO pgshift_q"
                })
                .await;
            after.push(r);
        }
        Ok::<_, Error>(after)
    }
    .await;
    // Always rolled back: the clone keeps nothing.
    clone
        .batch_execute("ROLLBACK")
        .await
        .map_err(Error::db("could not roll back the rehearsal"))?;
    let after = outcome?;
    let checks = queries
        .iter()
        .zip(before.into_iter().zip(after))
        .map(|(sql, (b, a))| compare(sql, b, a, plan, max_cost_ratio))
        .collect();
    Ok(result(Method::Rehearsal, checks))
}

fn result(method: Method, queries: Vec<QueryCheck>) -> CheckResult {
    let regressions = queries.iter().filter(|q| q.regressed).count();
    CheckResult {
        method,
        queries,
        regressions,
    }
}

fn compare(
    sql: &str,
    before: std::result::Result<Value, String>,
    after: std::result::Result<Value, String>,
    plan: &Plan,
    max_cost_ratio: f64,
) -> QueryCheck {
    match (before, after) {
        (Ok(b), Ok(a)) => {
            let reasons = diff::regressions(&b, &a, max_cost_ratio);
            let regressed = !reasons.is_empty();
            QueryCheck {
                sql: sql.to_string(),
                regressed,
                suggestion: regressed.then(|| suggestion(plan, &reasons)).flatten(),
                reasons,
                before: Some(Explained {
                    total_cost: diff::total_cost(&b),
                    plan: b,
                }),
                after: Some(Explained {
                    total_cost: diff::total_cost(&a),
                    plan: a,
                }),
                skipped: None,
            }
        }
        (b, a) => QueryCheck {
            sql: sql.to_string(),
            regressed: false,
            reasons: vec![],
            before: b.as_ref().ok().map(|p| Explained {
                total_cost: diff::total_cost(p),
                plan: p.clone(),
            }),
            after: a.as_ref().ok().map(|p| Explained {
                total_cost: diff::total_cost(p),
                plan: p.clone(),
            }),
            skipped: Some(b.err().or(a.err()).unwrap_or_default()),
            suggestion: None,
        },
    }
}

/// For the union-view case: name the sibling columns to widen too.
fn suggestion(plan: &Plan, reasons: &[String]) -> Option<String> {
    let union = plan
        .warnings
        .iter()
        .find(|w| w.contains("UNION") || w.contains("INTERSECT") || w.contains("EXCEPT"));
    match union {
        Some(w) => Some(w.clone()),
        None if reasons.iter().any(|r| r.contains("cast")) => Some(
            "a column compared with a widened one keeps its old type: widen it in the same migration, or cast in the query"
                .into(),
        ),
        None => None,
    }
}

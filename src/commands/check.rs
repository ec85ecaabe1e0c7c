//! `pgshift check` and the plan gate: explain the workload before and after.

use super::*;

/// The plan check's options from the command line.
pub(super) fn check_options(workload: &WorkloadArgs) -> plancheck::Options {
    plancheck::Options {
        queries_file: workload.queries.clone(),
        top: workload.top,
        max_cost_ratio: workload.max_cost_ratio,
        custom_plans: workload.custom_plans,
    }
}

/// Whether the check target is a hot standby (else a writable clone).
pub(super) async fn is_standby(target: &Client) -> Result<bool> {
    Ok(target
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .map_err(Error::db(
            "could not ask the check target whether it is a standby",
        ))?
        .get(0))
}

/// The check against `target`: the shadow method on a hot standby, the
/// rehearsal on a writable clone.
pub(super) async fn run_check(
    target: &Client,
    standby: bool,
    plan: &Plan,
    workload: &WorkloadArgs,
) -> Result<CheckResult> {
    let options = check_options(workload);
    let queries = plancheck::workload(target, &options).await?;
    if standby {
        plancheck::shadow(target, plan, &queries, &options).await
    } else {
        plancheck::rehearsal(target, plan, &queries, &options).await
    }
}

pub(super) async fn check(global: &GlobalArgs, printer: &Printer, args: CheckArgs) -> Result<()> {
    let url = global.replica_url.as_deref().ok_or_else(|| {
        Error::Usage(
            "check needs --replica-url (or PGSHIFT_REPLICA_URL): a hot standby or a writable clone"
                .into(),
        )
    })?;
    let (name, path) = migration_name(&args.migration);
    if let Some(p) = &path {
        migration::intents(&MigrationFile::read(p)?)?;
    }
    let target = Target::parse(url, "--replica-url")?
        .connect("pgshift check")
        .await?;
    let standby = is_standby(&target).await?;
    let plan = if standby {
        // The shadow columns must exist there: the migration's stored plan names them.
        let m = state::get(&target, &name).await?.ok_or_else(|| {
            Error::Usage(format!(
                "migration {name} has not been started: on a hot standby the check reads the shadow columns, so run \
                 `pgshift apply {} --no-cutover` on the primary first",
                args.migration
            ))
        })?;
        if m.phase != Phase::Ready {
            return Err(Error::Usage(format!(
                "migration {name} is at phase {} on the standby; the shadow method needs it `ready` (after `apply --no-cutover`)",
                m.phase
            )));
        }
        m.plan
    } else {
        let p = path.ok_or_else(|| {
            Error::Usage("on a writable clone, pass the migration's .sql path".into())
        })?;
        let file = MigrationFile::read(&p)?;
        // A rehearsal is rolled back: materialized views may be rebuilt in it.
        make_plan(
            &target,
            &file,
            plan::Options {
                rebuild_matviews: true,
                // The rehearsal runs the blocking ALTER, whatever the engine;
                // the update engine's plan would leave type changes out.
                engine: plan::EngineChoice::Auto,
                ..Default::default()
            },
        )
        .await?
    };
    let result = run_check(&target, standby, &plan, &args.workload).await?;
    let regressions = result.regressions;
    printer.report(&CheckReport(result)).map_err(io_error)?;
    if regressions > 0 {
        return Err(Error::Refused(if regressions == 1 {
            "1 query would get a worse plan after the migration".to_string()
        } else {
            format!("{regressions} queries would get worse plans after the migration")
        }));
    }
    Ok(())
}

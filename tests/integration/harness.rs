//! The test harness itself: clusters start, replicate and stop.

use std::time::{Duration, Instant};

use crate::support::{connect, primary};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_and_replica_start_replicate_a_row_and_stop() {
    let (primary, client) = primary().await;
    let replica = primary.start_replica().expect("start replica");

    client
        .batch_execute("CREATE TABLE probe (id int primary key, note text); INSERT INTO probe VALUES (1, 'hello');")
        .await
        .unwrap();

    let standby = connect(&replica.url("app")).await;
    let in_recovery: bool = standby
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .unwrap()
        .get(0);
    assert!(in_recovery, "the replica must be a hot standby");

    let deadline = Instant::now() + Duration::from_secs(30);
    let note: String = loop {
        match standby
            .query_opt("SELECT note FROM probe WHERE id = 1", &[])
            .await
        {
            Ok(Some(row)) => break row.get(0),
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
            other => panic!("row never replicated: {other:?}"),
        }
    };
    assert_eq!(note, "hello");

    // pg_stat_statements is loaded, as the plan checks need it.
    client
        .batch_execute("CREATE EXTENSION pg_stat_statements")
        .await
        .unwrap();

    let data_dir = replica.data_dir();
    drop(standby);
    drop(replica);
    assert!(
        !data_dir.exists(),
        "the replica's data dir is removed on drop"
    );
    let port = primary.port();
    drop(client);
    drop(primary);
    // Nothing listens on the port any more.
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_test_still_stops_its_cluster() {
    let port = std::sync::Arc::new(std::sync::Mutex::new(0u16));
    let seen = port.clone();
    let result = tokio::spawn(async move {
        let (cluster, _client) = primary().await;
        *seen.lock().unwrap() = cluster.port();
        panic!("boom");
    })
    .await;
    assert!(result.is_err());
    let port = *port.lock().unwrap();
    assert_ne!(port, 0);
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

//! Shared helpers for the integration tests.

use pgshift::testkit::Cluster;
use tokio_postgres::{Client, NoTls};

/// Connects to `url` without TLS (test clusters listen on loopback only).
pub async fn connect(url: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// A fresh primary with a database `app`, and a client on it.
pub async fn primary() -> (Cluster, Client) {
    let cluster = tokio::task::spawn_blocking(Cluster::start)
        .await
        .unwrap()
        .expect("start primary");
    cluster.create_database("app").expect("create database");
    let client = connect(&cluster.url("app")).await;
    (cluster, client)
}

//! The load harness's durable PostgreSQL server: PostgreSQL's default durability, with the settings
//! an operator's tuning adds (`pagewire-bench --postgres-setting`). A test process of its own,
//! since the server and its settings are the process's.

use pagewire_store::testing::pg_server;
use sqlx::Connection;

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

async fn show(connection: &mut sqlx::PgConnection, setting: &str) -> Result<String> {
    let (value,): (String,) = sqlx::query_as(&format!("SHOW {setting}")).fetch_one(connection).await?;
    Ok(value)
}

#[tokio::test]
async fn the_durable_server_runs_with_the_settings_asked_for_and_stays_durable() -> Result {
    pg_server::set_durable_settings(vec![
        String::from("wal_init_zero=off"),
        String::from("max_wal_size=2GB"),
    ])?;
    let url = pg_server::fresh_durable_database().await?;
    let mut connection = sqlx::PgConnection::connect(&url).await?;
    assert_eq!(show(&mut connection, "wal_init_zero").await?, "off");
    assert_eq!(show(&mut connection, "max_wal_size").await?, "2GB");
    // What was not asked for keeps PostgreSQL's default: every commit durable.
    assert_eq!(show(&mut connection, "fsync").await?, "on");
    assert_eq!(show(&mut connection, "synchronous_commit").await?, "on");
    connection.close().await?;
    // Once the server runs, its settings cannot change.
    assert!(pg_server::set_durable_settings(vec![String::from("wal_init_zero=on")]).is_err());
    Ok(())
}

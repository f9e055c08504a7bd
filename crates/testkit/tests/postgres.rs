//! The Postgres fixture really runs PostgreSQL (as `nobody` when the tests run as root), and its
//! data survives a stop and restart on the same port.

use switchboard_testkit::Postgres;

#[tokio::test]
async fn rows_survive_a_stop_and_restart_on_the_same_port() {
    let mut pg = Postgres::start().await.unwrap();
    assert_eq!(
        pg.url(),
        format!("postgres://postgres@127.0.0.1:{}/switchboard", pg.port())
    );
    pg.psql("CREATE TABLE notes (id int PRIMARY KEY, body text NOT NULL)")
        .await
        .unwrap();
    pg.psql("INSERT INTO notes VALUES (1, 'hello'), (2, 'world')")
        .await
        .unwrap();
    assert_eq!(
        pg.psql("SELECT id, body FROM notes ORDER BY id")
            .await
            .unwrap(),
        "1|hello\n2|world"
    );
    assert_eq!(
        pg.psql("SELECT current_database()").await.unwrap(),
        "switchboard"
    );

    let port = pg.port();
    pg.stop().await.unwrap();
    assert!(!pg.is_running());
    assert!(pg.psql("SELECT 1").await.is_err());
    pg.restart().await.unwrap();
    assert_eq!(pg.port(), port);
    assert_eq!(
        pg.psql("SELECT body FROM notes WHERE id = 2")
            .await
            .unwrap(),
        "world"
    );

    let err = pg
        .psql("SELECT * FROM missing")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing"), "{err}");
}

#[tokio::test]
async fn a_crashed_server_recovers_committed_rows_and_extra_databases_work() {
    let mut pg = Postgres::start().await.unwrap();
    let url = pg.create_database("other_db").await.unwrap();
    assert!(url.ends_with("/other_db"), "{url}");
    pg.psql_in(
        "other_db",
        "CREATE TABLE t (x int); INSERT INTO t VALUES (42)",
    )
    .await
    .unwrap();
    pg.kill_hard().await.unwrap();
    pg.restart().await.unwrap();
    assert_eq!(
        pg.psql_in("other_db", "SELECT x FROM t").await.unwrap(),
        "42"
    );
}

/// A test that fails while PostgreSQL is frozen drops it frozen: every one of its processes
/// must still go away.
#[tokio::test]
async fn a_frozen_server_dropped_leaves_no_process_behind() {
    let pg = Postgres::start().await.unwrap();
    pg.psql("SELECT 1").await.unwrap();
    let pids = pg.server_pids().unwrap();
    assert!(pids.len() > 1, "a postmaster and its children: {pids:?}");
    pg.freeze().unwrap();
    drop(pg);
    let alive = || {
        pids.iter()
            .filter(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists())
            .count()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while alive() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "{} of {pids:?} still there",
            alive()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

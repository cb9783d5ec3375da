//! The HA building blocks against a real PostgreSQL started by the test:
//! the lease upsert, epochs, the fenced intent insert, members, migrations.

mod common;

use std::time::Duration;

use callwarden::ha::db::{
    acquire_lease, first_seen_times, heartbeat, insert_intent, live_members, pardons,
    pending_intents, record_first_seen, record_outcome, release_lease, save_pardon, IntentOutcome,
    LeaseOutcome,
};
use callwarden::ha::schema::{latest_version, migrate};
use callwarden::ha::{connect, preferred_member};
use common::pg::PgServer;
use tokio_postgres::Client;

const LONG: Duration = Duration::from_secs(60);
const DEAD_AFTER: Duration = Duration::from_secs(10);

async fn migrated(server: &PgServer) -> Client {
    let mut client = connect(&server.url(), DEAD_AFTER).await.expect("connect");
    migrate(&mut client).await.expect("migrate");
    client
}

/// Expires `account`'s lease now, as the passing of `lease_ttl` would,
/// without a timed wait.
async fn expire(client: &Client, account: &str) {
    client
        .execute(
            "UPDATE ha_lease SET expires_at = clock_timestamp() - interval '1 second' WHERE account = $1",
            &[&account],
        )
        .await
        .expect("expire lease");
}

#[tokio::test]
async fn migrations_are_idempotent_and_concurrent_safe() {
    let Some(server) = PgServer::start() else {
        return;
    };
    let mut a = connect(&server.url(), DEAD_AFTER).await.unwrap();
    let mut b = connect(&server.url(), DEAD_AFTER).await.unwrap();
    let (ra, rb) = tokio::join!(migrate(&mut a), migrate(&mut b));
    assert_eq!(ra.unwrap(), latest_version());
    assert_eq!(rb.unwrap(), latest_version());
    assert_eq!(migrate(&mut a).await.unwrap(), latest_version());
    let n: i64 = a
        .query_one("SELECT count(*) FROM schema_version", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, i64::from(latest_version()));
}

#[tokio::test]
async fn a_newer_schema_is_refused() {
    let Some(server) = PgServer::start() else {
        return;
    };
    let mut client = migrated(&server).await;
    client
        .execute("INSERT INTO schema_version (version) VALUES (9999)", &[])
        .await
        .unwrap();
    let err = migrate(&mut client).await.unwrap_err();
    assert!(err.to_string().contains("9999"), "{err}");
}

#[tokio::test]
async fn two_contenders_one_holder() {
    let Some(server) = PgServer::start() else {
        return;
    };
    let a = migrated(&server).await;
    let b = connect(&server.url(), DEAD_AFTER).await.unwrap();
    for round in 0..20 {
        let account = format!("acct-{round}");
        let (ra, rb) = tokio::join!(
            acquire_lease(&a, &account, "node-a", LONG),
            acquire_lease(&b, &account, "node-b", LONG)
        );
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        let held = [&ra, &rb]
            .iter()
            .filter(|r| matches!(r, LeaseOutcome::Held { .. }))
            .count();
        assert_eq!(held, 1, "round {round}: {ra:?} {rb:?}");
        // The loser is told who holds it, at the same epoch.
        match (&ra, &rb) {
            (LeaseOutcome::Held { epoch }, LeaseOutcome::Other { holder, epoch: e })
            | (LeaseOutcome::Other { holder, epoch: e }, LeaseOutcome::Held { epoch }) => {
                assert_eq!(epoch, e);
                assert!(holder == "node-a" || holder == "node-b");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn renewing_keeps_the_epoch_and_takeover_after_expiry_bumps_it() {
    let Some(server) = PgServer::start() else {
        return;
    };
    let client = migrated(&server).await;
    let first = acquire_lease(&client, "acct", "node-a", LONG)
        .await
        .unwrap();
    assert_eq!(first, LeaseOutcome::Held { epoch: 1 });
    let renewed = acquire_lease(&client, "acct", "node-a", LONG)
        .await
        .unwrap();
    assert_eq!(renewed, LeaseOutcome::Held { epoch: 1 });
    // Not expired: node-b cannot take it.
    let refused = acquire_lease(&client, "acct", "node-b", LONG)
        .await
        .unwrap();
    assert_eq!(
        refused,
        LeaseOutcome::Other {
            holder: "node-a".into(),
            epoch: 1
        }
    );
    expire(&client, "acct").await;
    let taken = acquire_lease(&client, "acct", "node-b", LONG)
        .await
        .unwrap();
    assert_eq!(taken, LeaseOutcome::Held { epoch: 2 });
    // And back: every change of holder bumps it.
    expire(&client, "acct").await;
    let back = acquire_lease(&client, "acct", "node-a", LONG)
        .await
        .unwrap();
    assert_eq!(back, LeaseOutcome::Held { epoch: 3 });
}

#[tokio::test]
async fn released_lease_is_taken_at_once() {
    let Some(server) = PgServer::start() else {
        return;
    };
    let client = migrated(&server).await;
    acquire_lease(&client, "acct", "node-a", LONG)
        .await
        .unwrap();
    assert!(release_lease(&client, "acct", "node-a", 1).await.unwrap());
    let taken = acquire_lease(&client, "acct", "node-b", LONG)
        .await
        .unwrap();
    assert_eq!(taken, LeaseOutcome::Held { epoch: 2 });
    // The old holder's release no longer does anything.
    assert!(!release_lease(&client, "acct", "node-a", 1).await.unwrap());
}

#[tokio::test]
async fn a_stale_holder_cannot_record_an_intent() {
    let Some(server) = PgServer::start() else {
        return;
    };
    let mut client = migrated(&server).await;
    acquire_lease(&client, "acct", "node-a", LONG)
        .await
        .unwrap();
    let ok = insert_intent(&mut client, "acct", "node-a", 1, "call-1", "hangup")
        .await
        .unwrap();
    assert!(matches!(ok, IntentOutcome::Recorded { .. }), "{ok:?}");

    // Expired but not yet taken over: still fenced.
    expire(&client, "acct").await;
    let expired = insert_intent(&mut client, "acct", "node-a", 1, "call-2", "hangup")
        .await
        .unwrap();
    assert_eq!(expired, IntentOutcome::Fenced);

    // Taken over: the old holder at the old epoch is fenced, the new one is not.
    acquire_lease(&client, "acct", "node-b", LONG)
        .await
        .unwrap();
    let stale = insert_intent(&mut client, "acct", "node-a", 1, "call-3", "hangup")
        .await
        .unwrap();
    assert_eq!(stale, IntentOutcome::Fenced);
    // Right holder name, stale epoch: fenced too.
    let wrong_epoch = insert_intent(&mut client, "acct", "node-b", 1, "call-3", "hangup")
        .await
        .unwrap();
    assert_eq!(wrong_epoch, IntentOutcome::Fenced);
    let fresh = insert_intent(&mut client, "acct", "node-b", 2, "call-3", "hangup")
        .await
        .unwrap();
    assert!(matches!(fresh, IntentOutcome::Recorded { .. }), "{fresh:?}");

    // Fenced inserts left no rows behind.
    let n: i64 = client
        .query_one(
            "SELECT count(*) FROM ha_decision WHERE call_uuid = 'call-2'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
}

#[tokio::test]
async fn one_decision_per_call_and_action_final_once_the_call_ended() {
    let Some(server) = PgServer::start() else {
        return;
    };
    let mut client = migrated(&server).await;
    acquire_lease(&client, "acct", "node-a", LONG)
        .await
        .unwrap();
    let IntentOutcome::Recorded { id } =
        insert_intent(&mut client, "acct", "node-a", 1, "call-1", "hangup")
            .await
            .unwrap()
    else {
        panic!("intent not recorded")
    };
    // The leader died before the answer: a new leader claims the same row
    // (after re-reading the call), and the old one can no longer settle it.
    expire(&client, "acct").await;
    acquire_lease(&client, "acct", "node-b", LONG)
        .await
        .unwrap();
    let claimed = insert_intent(&mut client, "acct", "node-b", 2, "call-1", "hangup")
        .await
        .unwrap();
    assert_eq!(claimed, IntentOutcome::Recorded { id });
    assert!(!record_outcome(&client, id, "node-a", 1, "failed")
        .await
        .unwrap());
    // A failed DELETE may be tried again; once the call ended, it is final.
    assert!(record_outcome(&client, id, "node-b", 2, "failed")
        .await
        .unwrap());
    let again = insert_intent(&mut client, "acct", "node-b", 2, "call-1", "hangup")
        .await
        .unwrap();
    assert_eq!(again, IntentOutcome::Recorded { id });
    assert!(record_outcome(&client, id, "node-b", 2, "ok")
        .await
        .unwrap());
    let after_ok = insert_intent(&mut client, "acct", "node-b", 2, "call-1", "hangup")
        .await
        .unwrap();
    assert_eq!(
        after_ok,
        IntentOutcome::Duplicate {
            holder: "node-b".into(),
            outcome: "ok".into()
        }
    );
    // Another action on the same call is its own decision.
    let other_action = insert_intent(&mut client, "acct", "node-b", 2, "call-1", "warn")
        .await
        .unwrap();
    assert!(matches!(other_action, IntentOutcome::Recorded { .. }));
    let rows: i64 = client
        .query_one("SELECT count(*) FROM ha_decision", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 2);
}

#[tokio::test]
async fn concurrent_intents_for_one_call_leave_one_row() {
    let Some(server) = PgServer::start() else {
        return;
    };
    let mut a = migrated(&server).await;
    let mut b = connect(&server.url(), DEAD_AFTER).await.unwrap();
    acquire_lease(&a, "acct", "node-a", LONG).await.unwrap();
    for i in 0..20 {
        let call = format!("call-{i}");
        let (ra, rb) = tokio::join!(
            insert_intent(&mut a, "acct", "node-a", 1, &call, "hangup"),
            insert_intent(&mut b, "acct", "node-a", 1, &call, "hangup")
        );
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        assert_eq!(ra, rb, "{call}: both name the one row");
    }
    let rows: i64 = a
        .query_one("SELECT count(*) FROM ha_decision", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, 20);
}

#[tokio::test]
async fn members_heartbeat_and_expire() {
    let Some(server) = PgServer::start() else {
        return;
    };
    let client = migrated(&server).await;
    heartbeat(&client, "node-b", LONG).await.unwrap();
    heartbeat(&client, "node-a", LONG).await.unwrap();
    heartbeat(&client, "node-c", LONG).await.unwrap();
    let live = live_members(&client).await.unwrap();
    assert_eq!(live, ["node-a", "node-b", "node-c"]);
    client
        .execute(
            "UPDATE ha_member SET expires_at = clock_timestamp() - interval '1 second' WHERE node_id = 'node-b'",
            &[],
        )
        .await
        .unwrap();
    let live = live_members(&client).await.unwrap();
    assert_eq!(live, ["node-a", "node-c"]);
    // Every member computes the same leader from the same list.
    let leader = preferred_member("acct", &live).unwrap();
    assert!(leader == "node-a" || leader == "node-c");
    // A heartbeat brings it back.
    heartbeat(&client, "node-b", LONG).await.unwrap();
    assert_eq!(live_members(&client).await.unwrap().len(), 3);
}

#[tokio::test]
async fn a_bad_url_is_refused_without_echoing_it() {
    let err = connect("postgresql://user:s3cret@host:notaport/db", DEAD_AFTER)
        .await
        .unwrap_err();
    assert!(!err.to_string().contains("s3cret"), "{err}");
}

#[tokio::test]
async fn a_new_leader_sees_pending_intents_pardons_and_first_seen_times() {
    let Some(server) = PgServer::start() else {
        return;
    };
    let mut old = migrated(&server).await;
    acquire_lease(&old, "acct", "node-a", LONG).await.unwrap();
    let IntentOutcome::Recorded { id: done } =
        insert_intent(&mut old, "acct", "node-a", 1, "call-1", "hangup")
            .await
            .unwrap()
    else {
        panic!("intent not recorded")
    };
    assert!(record_outcome(&old, done, "node-a", 1, "ok").await.unwrap());
    insert_intent(&mut old, "acct", "node-a", 1, "call-2", "hangup")
        .await
        .unwrap();
    save_pardon(&old, "acct", "call-3", None).await.unwrap();
    save_pardon(&old, "acct", "call-4", Some(1_000))
        .await
        .unwrap();
    assert_eq!(
        record_first_seen(&old, "acct", "call-5", 5_000)
            .await
            .unwrap(),
        5_000
    );
    drop(old);

    // Another member, another connection, after a takeover.
    let new = connect(&server.url(), DEAD_AFTER).await.unwrap();
    expire(&new, "acct").await;
    acquire_lease(&new, "acct", "node-b", LONG).await.unwrap();
    let pending = pending_intents(&new, "acct").await.unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].call_uuid, "call-2");
    assert_eq!(
        (pending[0].holder.as_str(), pending[0].epoch),
        ("node-a", 1)
    );
    assert_eq!(
        pardons(&new, "acct").await.unwrap(),
        [
            ("call-3".to_owned(), None),
            ("call-4".to_owned(), Some(1_000))
        ]
    );
    // A later sighting by the new leader keeps the first time.
    assert_eq!(
        record_first_seen(&new, "acct", "call-5", 9_000)
            .await
            .unwrap(),
        5_000
    );
    assert_eq!(
        first_seen_times(&new, "acct").await.unwrap(),
        [("call-5".to_owned(), 5_000)]
    );
    // Other accounts see none of it.
    assert!(pending_intents(&new, "other").await.unwrap().is_empty());
    assert!(pardons(&new, "other").await.unwrap().is_empty());
}

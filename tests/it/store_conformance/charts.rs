//! Attempt counts per endpoint and minute, for the dashboard's charts (`ChartStore`).

use hookline::domain::attempt_stats::{self, Window, latency_bucket};

use super::*;

fn timed_out(m: &Message, ep: &Endpoint, at: Timestamp) -> AttemptRecord {
    let a = Attempt {
        status: DeliveryStatus::Fail,
        status_code: 0,
        error: Some(attempt_stats::timeout_error(Duration::from_secs(15))),
        duration_ms: 15_000,
        ..attempt(m, ep, Trigger::Scheduled, 0, at)
    };
    let policy = ep.retry_policy.clone().unwrap_or_default();
    record_of(a, Outcome::classify(&policy, None), policy)
}

pub async fn chart_minutes(store: SharedStore) {
    let a = app(None);
    store.insert_app(&a).await.unwrap();
    let (e1, e2, quiet) = (endpoint(&a.id), endpoint(&a.id), endpoint(&a.id));
    for e in [&e1, &e2, &quiet] {
        store.insert_endpoint(e).await.unwrap();
    }
    let m = create(&store, &a.id, message("t", T0), None).await;

    // T0 is on a minute boundary: 2 successes and a failure in its first
    // minute, a timeout two minutes later; e2 gets one success.
    record(&store, &m, &e1, Trigger::Scheduled, 500, at(1)).await;
    record(&store, &m, &e1, Trigger::Manual, 200, at(30)).await;
    record(&store, &m, &e1, Trigger::Manual, 200, at(59)).await;
    store.record_attempt(timed_out(&m, &e1, at(150))).await.unwrap();
    record(&store, &m, &e2, Trigger::Scheduled, 200, at(61)).await;
    // Recorded together (one batch on PostgreSQL): they add up too.
    futures_join_all((0..6).map(|i| record(&store, &m, &e2, Trigger::Manual, 503, at(120 + i)))).await;

    let now = at(10 * 60);
    let ids = vec![e1.id.clone(), e2.id.clone(), quiet.id.clone()];
    let series = store.attempt_series(&ids, Window::Hour, now).await.unwrap();
    assert_eq!(series.len(), 3, "every endpoint asked for has a series");
    let minute = |ep: &Endpoint, t: Timestamp| {
        let s = &series[&ep.id];
        s.intervals[(attempt_stats::minute_of(t) - s.first_minute) as usize].clone()
    };
    let first = minute(&e1, T0);
    assert_eq!((first.success, first.failure, first.timeout), (2, 1, 0));
    assert_eq!(first.latency[latency_bucket(3)], 3, "durations land in their bucket");
    let later = minute(&e1, at(150));
    assert_eq!((later.success, later.failure, later.timeout), (0, 0, 1));
    assert_eq!(later.latency[latency_bucket(15_000)], 1);
    assert_eq!(series[&e1.id].total().total(), 4);
    let e2_total = series[&e2.id].total();
    assert_eq!((e2_total.success, e2_total.failure), (1, 6));
    assert_eq!(minute(&e2, at(120)).failure, 6);
    assert_eq!(series[&quiet.id].total().total(), 0);

    // A day's intervals are 15 minutes: the first minutes fall in one.
    let day = store.attempt_series(std::slice::from_ref(&e1.id), Window::Day, now).await.unwrap();
    let busy: Vec<_> = day[&e1.id].intervals.iter().filter(|s| s.total() > 0).collect();
    assert_eq!(busy.len(), 1);
    assert_eq!((busy[0].success, busy[0].failure, busy[0].timeout), (2, 1, 1));

    // The window moves on: two hours later the hour chart is empty, the
    // week's still counts them.
    let two_hours_on = at(2 * 3600 + 10 * 60);
    let gone = store.attempt_series(std::slice::from_ref(&e1.id), Window::Hour, two_hours_on).await.unwrap();
    assert_eq!(gone[&e1.id].total().total(), 0);
    let week = store.attempt_series(std::slice::from_ref(&e1.id), Window::Week, two_hours_on).await.unwrap();
    assert_eq!(week[&e1.id].total().total(), 4);

    // Pruning drops whole minutes before the cut.
    assert_eq!(store.prune_attempt_stats(at(60)).await.unwrap(), 1, "e1's first minute");
    let left = store.attempt_series(&ids, Window::Hour, now).await.unwrap();
    assert_eq!(left[&e1.id].total().total(), 1);
    assert_eq!(left[&e2.id].total().total(), 7);
}

/// PostgreSQL: two nodes record attempts to one endpoint in one minute. Each
/// node's recorder counts in rows of its own (no waiting on the other's
/// commit), and the chart adds them up.
#[tokio::test]
async fn two_nodes_count_in_rows_of_their_own_and_the_chart_adds_them_up() {
    use sqlx::Connection;
    let url = crate::pg::fresh_database().await;
    let one: SharedStore = Arc::new(hookline::store::postgres::PgStore::connect(&url).await.unwrap());
    let two: SharedStore = Arc::new(hookline::store::postgres::PgStore::connect(&url).await.unwrap());
    let a = app(None);
    one.insert_app(&a).await.unwrap();
    let ep = endpoint(&a.id);
    one.insert_endpoint(&ep).await.unwrap();
    let m = create(&one, &a.id, message("t", T0), None).await;
    record(&one, &m, &ep, Trigger::Scheduled, 500, at(1)).await;
    record(&two, &m, &ep, Trigger::Manual, 200, at(2)).await;
    record(&one, &m, &ep, Trigger::Manual, 200, at(3)).await;

    let mut db = sqlx::PgConnection::connect(&url).await.unwrap();
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM attempt_minutes WHERE endpoint_id = $1")
        .bind(&ep.id)
        .fetch_one(&mut db)
        .await
        .unwrap();
    assert_eq!(rows, 2, "one row per node for the one endpoint and minute");
    for store in [&one, &two] {
        let series = store.attempt_series(std::slice::from_ref(&ep.id), Window::Hour, at(600)).await.unwrap();
        let total = series[&ep.id].total();
        assert_eq!((total.success, total.failure), (2, 1), "both nodes' attempts, read on either");
    }
}

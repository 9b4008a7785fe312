use super::*;
use kakuremichi_proto::traffic::Failure;

fn store() -> (TrafficStore, std::path::PathBuf) {
    let mut nonce = [0u8; 4];
    getrandom::fill(&mut nonce).unwrap();
    let dir = std::env::temp_dir().join(format!(
        "kakuremichi-traffic-{}-{:08x}",
        std::process::id(),
        u32::from_le_bytes(nonce)
    ));
    // The writer's own roll-up, on the clock, stays out of these tests' way.
    let retention = Retention {
        every: Duration::from_secs(3600),
        ..Retention::default()
    };
    (TrafficStore::open(&dir, retention).unwrap(), dir)
}

fn point(tunnel: &str, minute: u64, requests: u64) -> TrafficPoint {
    let mut counts = TrafficCounts::default();
    for i in 0..requests {
        counts.answered(if i % 10 == 0 { 502 } else { 200 });
        counts.latency.record(1_000 + i);
    }
    counts.bytes_in = 100 * requests;
    *counts.failed.entry(Failure::Unreachable).or_default() += requests / 10;
    counts.open_max = 3;
    TrafficPoint {
        tunnel_id: tunnel.into(),
        minute,
        counts,
    }
}

#[test]
fn a_repeated_report_changes_nothing_and_a_restarted_gateway_adds() {
    let (store, _dir) = store();
    let now = 29_000_000;
    let report = |instance: u64, requests: u64| {
        (
            "gw_1".to_string(),
            instance,
            vec![point("tun_a", now, requests)],
        )
    };
    store.write_now(vec![report(1, 10), report(1, 10)]).unwrap();
    store.write_now(vec![report(1, 20)]).unwrap(); // the minute grew
    store.write_now(vec![report(2, 5)]).unwrap(); // restarted within the minute
    let series = store.series(["tun_a"], None, Range::Hour, now).unwrap();
    assert_eq!(series.totals.requests, 25);
    assert_eq!(series.points.last().unwrap().requests, 25);
    assert_eq!(series.totals.status_5xx, 2 + 1);
    let other = store
        .series(["tun_a"], Some("gw_2"), Range::Hour, now)
        .unwrap();
    assert_eq!(other.totals.requests, 0);
    assert_eq!(
        store
            .series(["tun_b"], None, Range::Hour, now)
            .unwrap()
            .totals
            .requests,
        0
    );
}

/// Three days of minutes from two gateways, rolled up every simulated hour with the
/// default bounds: minutes never outlive 48 hours (plus the hour being filled), hours never
/// outlive 90 days, and no request is lost or counted twice on the way.
#[test]
fn minutes_become_hours_and_both_stay_within_their_bounds() {
    let (store, _dir) = store();
    let retention = Retention::default();
    let start = 29_000_040; // a minute number, 40 minutes into an hour
    let days = 3 * 24 * 60;
    let mut sent = 0;
    for hour in 0..days / 60 {
        let mut reports = Vec::new();
        for m in hour * 60..(hour + 1) * 60 {
            for gateway in ["gw_1", "gw_2"] {
                reports.push((gateway.to_string(), 7, vec![point("tun_a", start + m, 4)]));
                sent += 4;
            }
        }
        store.write_now(reports).unwrap();
        let now = start + (hour + 1) * 60 - 1;
        store.roll_up(now, retention).unwrap();
        let (minutes, _, _) = store.size().unwrap();
        assert!(
            minutes <= 2 * (retention.minutes + 60),
            "{minutes} minute records"
        );
    }
    let now = start + days - 1;
    let (minutes, hours, _) = store.size().unwrap();
    assert!(hours > 0 && minutes > 0);
    let week = store.series(["tun_a"], None, Range::Week, now).unwrap();
    assert_eq!(
        week.totals.requests, sent,
        "every request once, minutes and hours together"
    );
    assert_eq!(week.totals.bytes_in, 100 * sent);
    assert_eq!(
        week.totals.open_max, 6,
        "two gateways' 3 open side by side, not summed over time"
    );
    let p99 = week.totals.p99_ms.unwrap();
    assert!((p99 - 1.003).abs() < 0.07, "{p99}");
    // 90 days on, everything is gone.
    store
        .roll_up(now + retention.hours + 24 * 60, retention)
        .unwrap();
    assert_eq!(store.size().unwrap().0 + store.size().unwrap().1, 0);
}

#[test]
fn forged_points_are_not_kept() {
    let (store, _dir) = store();
    let mut bad = point("tun_a", 29_000_000, 1);
    bad.counts.latency = serde_json::from_str("[[9999,1]]").unwrap();
    let nul = point("tun\0a", 29_000_000, 1);
    store
        .write_now(vec![("gw_1".into(), 1, vec![bad, nul])])
        .unwrap();
    assert_eq!(store.size().unwrap().0, 0);
}

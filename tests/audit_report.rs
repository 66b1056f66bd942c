//! `report`: the figures match the records written; no request ids or text in any format.

mod audit_support;

use audit_support::*;
use careguard::audit::report::{csv, markdown, report};
use careguard::audit::Retention;
use careguard::guard::policy::{Action, Mode};

#[test]
fn figures_match_the_traffic_and_hold_no_identifiers() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = start(&config(dir.path(), Retention::Full));
    // 4 crisis exchanges with a referral shown (3 US, 1 GB), 1 crisis without one, 3 stigma
    // replies (one in shadow mode), 2 clean ones.
    for (i, region) in ["US", "US", "US", "GB"].iter().enumerate() {
        record(
            &log,
            &format!("crisis-{i}"),
            i % 2 == 0,
            &state(CRISIS_USER, Some(BRIDGES_REPLY), region),
        );
    }
    let mut silent = state(CRISIS_USER, Some(BRIDGES_REPLY), "US");
    silent.referral = false;
    record(&log, "crisis-no-referral", false, &silent);
    for i in 0..3 {
        let s = state(BENIGN_USER, Some(STIGMA_REPLY), "US");
        let s = if i == 0 {
            decided(s, Action::Replace, Mode::Shadow)
        } else {
            s
        };
        record(&log, &format!("stigma-{i}"), false, &s);
    }
    for i in 0..2 {
        record(
            &log,
            &format!("clean-{i}"),
            true,
            &state(BENIGN_USER, Some(CLEAN_REPLY), "US"),
        );
    }
    log.shutdown();
    let month = records(dir.path())[0]["time"].as_str().unwrap()[..7].to_string();

    let r = report(&[dir.path().to_path_buf()], None, None).unwrap();
    assert_eq!(r.months.len(), 1);
    let m = &r.months[0];
    assert_eq!(
        (m.month.as_str(), m.tenant.as_str()),
        (month.as_str(), "clinic-a")
    );
    assert_eq!(m.exchanges, 10);
    assert_eq!(m.crisis_detections, 5);
    assert_eq!(m.crisis_referrals, 4);
    assert_eq!(m.crisis_referrals_by_region.get("US"), Some(&3));
    assert_eq!(m.crisis_referrals_by_region.get("GB"), Some(&1));
    assert_eq!(m.violations.get("no-suicide-enablement"), Some(&5));
    assert_eq!(m.violations.get("no-stigma"), Some(&3));
    assert_eq!(m.actions.get("replace/enforce"), Some(&7));
    assert_eq!(m.actions.get("replace/shadow"), Some(&1));
    assert_eq!(m.actions.get("allow/enforce"), Some(&2));
    assert_eq!(r.sb243.len(), 1);
    let y = &r.sb243[0];
    assert_eq!(
        (
            y.year.as_str(),
            y.crisis_referral_notifications,
            y.crisis_detections,
            y.exchanges
        ),
        (&month[..4], 4, 5, 10)
    );
    assert_eq!(y.by_region.get("US"), Some(&3));

    let md = markdown(&r);
    let json = serde_json::to_string(&r).unwrap();
    let csv = csv(&r);
    assert!(md.contains("## SB 243 annual figures"));
    assert!(
        csv.contains(&format!(
            "sb243,{},clinic-a,crisis_referral_notifications,,4",
            &month[..4]
        )),
        "{csv}"
    );
    for out in [&md, &json, &csv] {
        for needle in [
            "crisis-0",
            "crisis-no-referral",
            "stigma-1",
            "clean-0",
            "psychos",
            "bridges",
            "req-",
            "companion",
        ] {
            assert!(!out.contains(needle), "{needle:?} leaked into:\n{out}");
        }
    }
}

#[test]
fn dates_limit_the_period() {
    let dir = tempfile::tempdir().unwrap();
    write_log(dir.path(), &config(dir.path(), Retention::Hashed), 6);
    let day = records(dir.path())[0]["time"].as_str().unwrap()[..10].to_string();
    let all = report(&[dir.path().to_path_buf()], Some(&day), Some(&day)).unwrap();
    assert_eq!(all.months[0].exchanges, 6);
    let none = report(&[dir.path().to_path_buf()], Some("2999-01-01"), None).unwrap();
    assert!(none.months.is_empty() && none.sb243.is_empty());
    let before = report(&[dir.path().to_path_buf()], None, Some("2000-01-01")).unwrap();
    assert!(before.months.is_empty());
}

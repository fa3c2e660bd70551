//! Each formula on hand-computed data and published reference values
//! (scipy's results quoted for the tests), and each decision helper on
//! examples that must pass, be falsified and be inconclusive.

use super::*;

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol
}

#[test]
fn summary_matches_hand_computation() {
    let s = Summary::of(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]).unwrap();
    assert_eq!((s.n, s.mean, s.median, s.min, s.max), (8, 5.0, 4.5, 2.0, 9.0));
    assert!(close(s.std_dev, (32.0f64 / 7.0).sqrt(), 1e-12));
    assert!(close(s.cv, s.std_dev / 5.0, 1e-12));
    assert!(close(s.p90, 7.6, 1e-12), "type-7 p90: {}", s.p90);
    assert!(close(s.p99, 7.0 + 0.93 * 2.0, 1e-12));
    // t(0.975, 7) = 2.364624 (tables); half-width = t * sd / sqrt(8).
    let half = 2.364624 * s.std_dev / 8f64.sqrt();
    assert!(close(s.mean_ci95.lo, 5.0 - half, 1e-5) && close(s.mean_ci95.hi, 5.0 + half, 1e-5), "{:?}", s.mean_ci95);
}

#[test]
fn t_critical_matches_tables() {
    assert!(close(t_critical(0.95, 7.0), 2.364624, 1e-6));
    assert!(close(t_critical(0.95, 29.0), 2.045230, 1e-6));
    assert!(close(t_critical(0.99, 10.0), 3.169273, 1e-6));
}

#[test]
fn summary_rejects_too_few_and_non_finite() {
    assert_eq!(Summary::of(&[1.0]).unwrap_err().to_string(), "a summary needs at least 2 samples, got 1");
    assert_eq!(Summary::of(&[1.0, f64::NAN]).unwrap_err().to_string(), "sample #1 is not finite (NaN)");
}

#[test]
fn tukey_fences_classify_without_dropping() {
    let mut xs: Vec<f64> = (1..=10).map(f64::from).collect();
    xs.extend([100.0, 20.0, -20.0]);
    xs.sort_by(f64::total_cmp);
    let o = tukey(&xs);
    // 13 values: q1 = 3, q3 = 9, IQR 6; mild fences at -6 and 18, severe at -15 and 27.
    assert_eq!((o.low_severe, o.low_mild, o.high_mild, o.high_severe), (1, 0, 1, 1));
    assert_eq!(Summary::of(&xs).unwrap().n, 13);
}

#[test]
fn welch_t_matches_scipy() {
    // scipy.stats.ttest_ind([1,2,3,4,5], [6,7,8,9,10], equal_var=False): t = -5, p = 0.001052825793366539
    let r = welch_t(&[1.0, 2.0, 3.0, 4.0, 5.0], &[6.0, 7.0, 8.0, 9.0, 10.0]).unwrap();
    assert!(close(r.statistic, -5.0, 1e-12) && close(r.p_value, 0.001052825793366539, 1e-9), "{r:?}");
}

#[test]
fn mann_whitney_matches_scipy() {
    // scipy.stats.mannwhitneyu(a, b, method="asymptotic", use_continuity=True): U = 0, p = 0.012185780355344...
    let r = mann_whitney_u(&[1.0, 2.0, 3.0, 4.0, 5.0], &[6.0, 7.0, 8.0, 9.0, 10.0]).unwrap();
    assert_eq!(r.statistic, 0.0);
    assert!(close(r.p_value, 0.0121857803553, 1e-6), "{r:?}");
    let same = mann_whitney_u(&[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0]).unwrap();
    assert!(close(same.p_value, 1.0, 1e-12));
}

#[test]
fn holm_adjusts_in_input_order() {
    let adj = holm(&[0.01, 0.04, 0.03, 0.005]);
    let want = [0.03, 0.06, 0.06, 0.02];
    assert!(adj.iter().zip(want).all(|(a, b)| close(*a, b, 1e-12)), "{adj:?}");
}

#[test]
fn bootstrap_is_seeded_and_brackets_the_median() {
    let xs: Vec<f64> = (0..40).map(|i| 100.0 + ((i * 37) % 11) as f64).collect();
    let a = bootstrap_median(&xs, 0.95, 2000, 7).unwrap();
    assert_eq!(a, bootstrap_median(&xs, 0.95, 2000, 7).unwrap());
    let m = median(&xs);
    assert!(a.lo <= m && m <= a.hi && a.hi - a.lo < 11.0, "{a:?} around {m}");
}

#[test]
fn ratio_of_medians_of_scaled_samples() {
    let b: Vec<f64> = (0..30).map(|i| 50.0 + (i % 3) as f64 * 0.1).collect();
    let a: Vec<f64> = b.iter().map(|x| 2.0 * x).collect();
    let r = ratio_of_medians(&a, &b, 0.95, 2000, 1).unwrap();
    assert!(close(r.ratio, 2.0, 1e-12));
    assert!(r.ci.lo > 1.99 && r.ci.hi < 2.01 && r.ci.lo <= 2.0 && r.ci.hi >= 2.0, "{r:?}");
}

fn iv(lo: f64, hi: f64) -> Interval {
    Interval { lo, hi, level: 0.95 }
}

#[test]
fn interval_decisions_pass_fail_and_abstain() {
    assert_eq!(decide_interval(iv(2.1, 2.5), Op::Ge, 2.0), Decision::Pass);
    assert_eq!(decide_interval(iv(1.2, 1.9), Op::Ge, 2.0), Decision::Falsified);
    assert_eq!(decide_interval(iv(1.9, 2.1), Op::Ge, 2.0), Decision::Inconclusive);
    assert_eq!(decide_interval(iv(0.01, 0.04), Op::Lt, 0.05), Decision::Pass);
    assert_eq!(decide_interval(iv(0.06, 0.09), Op::Lt, 0.05), Decision::Falsified);
    assert_eq!(decide_interval(iv(0.04, 0.06), Op::Le, 0.05), Decision::Inconclusive);
    assert_eq!(decide_interval(iv(f64::NAN, 1.0), Op::Ge, 0.0), Decision::Inconclusive);
}

#[test]
fn value_decisions_pass_and_fail() {
    assert_eq!(decide_value(60.5, Op::Ge, 60.0), Decision::Pass);
    assert_eq!(decide_value(59.9, Op::Ge, 60.0), Decision::Falsified);
    assert_eq!(decide_value(0.2, Op::Lt, 0.01), Decision::Falsified);
    assert_eq!(decide_value(f64::NAN, Op::Le, 1.0), Decision::Falsified);
}

#[test]
fn change_detection_needs_significance_and_size() {
    let old: Vec<f64> = (0..30).map(|i| 100.0 + (i % 5) as f64 * 0.2).collect();
    let slower: Vec<f64> = old.iter().map(|x| x * 0.9).collect();
    let faster: Vec<f64> = old.iter().map(|x| x * 1.1).collect();
    let slightly: Vec<f64> = old.iter().map(|x| x * 1.005).collect();
    assert_eq!(detect_change(&old, &slower, 0.05, 0.02).unwrap().0, Change::Regressed);
    assert_eq!(detect_change(&old, &faster, 0.05, 0.02).unwrap().0, Change::Improved);
    assert_eq!(detect_change(&old, &slightly, 0.05, 0.02).unwrap().0, Change::NoChange);
    assert_eq!(detect_change(&old, &old, 0.05, 0.0).unwrap().0, Change::NoChange);
}

#[test]
fn histograms_count_every_finite_value_once() {
    let h = histogram(&[1.0, 2.0, 2.5, 10.0, f64::NAN], 3);
    assert_eq!((h.lo, h.width, h.counts.clone()), (1.0, 3.0, vec![3, 0, 1]));
    assert_eq!(histogram(&[5.0, 5.0], 2).counts, vec![2, 0]);
    assert_eq!(histogram(&[], 4), Histogram { lo: 0.0, width: 0.25, counts: vec![0; 4] });
}

//! `reports/junit.xml` as a JUnit consumer reads it: the `junitparser` Python
//! package (installed by `make tools` into `.tools/lib`) parses the XML written
//! from the committed sample report, and its counts equal the report's. Skips
//! with the reason when python3 or junitparser is missing.

use std::path::Path;
use std::process::Command;

use falsify::record::{Outcome, RunReport};

const CONSUMER: &str = r#"
import json, sys
from junitparser import JUnitXml, Failure, Error, Skipped
xml = JUnitXml.fromfile(sys.argv[1])
suites = list(xml)
cases = [case for suite in suites for case in suite]
kinds = lambda kind: sum(1 for case in cases if any(isinstance(r, kind) for r in case.result))
print(json.dumps({
    "suite_tests": sum(s.tests for s in suites),
    "suite_failures": sum(s.failures for s in suites),
    "suite_errors": sum(s.errors for s in suites),
    "suite_skipped": sum(s.skipped for s in suites),
    "cases": len(cases),
    "passed": sum(1 for case in cases if case.is_passed),
    "failed": kinds(Failure),
    "errored": kinds(Error),
    "skipped": kinds(Skipped),
    "names": [case.name for case in cases],
    "messages": [r.message for case in cases for r in case.result],
}))
"#;

#[test]
fn junitparser_reads_the_counts_of_the_report() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib = root.join(".tools/lib");
    let probe = Command::new("python3").arg("-c").arg("import junitparser").env("PYTHONPATH", &lib).output();
    match probe {
        Ok(out) if out.status.success() => {}
        Ok(_) => return eprintln!("skipped: junitparser is not importable from {} (run make tools)", lib.display()),
        Err(e) => return eprintln!("skipped: python3 cannot be run ({e})"),
    }
    let text = std::fs::read_to_string(root.join("tests/fixtures/report-v2-sample.json")).unwrap();
    let mut report = RunReport::from_json(serde_json::from_str(&text).unwrap()).unwrap();
    let mut odd = report.claims[1].clone();
    odd.id = "F999".into();
    odd.title = "quotes \" ' <tags> & amps".into();
    odd.outcome = Outcome::error("line one\nline two <x> & \"y\"");
    report.claims.push(odd);
    report.summary = report.summary_of_claims();

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("junit.xml");
    std::fs::write(&path, falsify::report::junit::render(&report)).unwrap();
    let out = Command::new("python3").arg("-c").arg(CONSUMER).arg(&path).env("PYTHONPATH", &lib).output().unwrap();
    assert!(out.status.success(), "junitparser failed: {}", String::from_utf8_lossy(&out.stderr));
    let read: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();

    let s = &report.summary;
    let failed = s.falsified + s.inconclusive + s.error;
    let skipped = s.skipped + s.pending;
    let counts = |keys: [&str; 4]| keys.map(|k| read[k].as_u64().unwrap() as usize);
    assert_eq!(
        counts(["suite_tests", "suite_failures", "suite_errors", "suite_skipped"]),
        [s.total, failed, 0, skipped]
    );
    assert_eq!(counts(["cases", "passed", "failed", "skipped"]), [s.total, s.pass, failed, skipped]);
    assert_eq!(read["errored"], 0);
    assert_eq!(read["names"][4], "F999 quotes \" ' <tags> & amps");
    assert!(read["messages"].as_array().unwrap().iter().any(|m| m == "line one\nline two <x> & \"y\""), "{read}");
}

//! The report's published JSON Schema (`reports/schema/report-v2.json`,
//! draft 2020-12) and validation against it: `falsify run` validates every
//! report before writing it, and a report that breaks the schema is rejected
//! with the failing path named.

use std::sync::OnceLock;

/// The schema's text, as published in the repository.
pub const SCHEMA: &str = include_str!("../../reports/schema/report-v2.json");

/// The schema's path in the repository.
pub const SCHEMA_PATH: &str = "reports/schema/report-v2.json";

/// One place where a document breaks the schema.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    /// JSON Pointer to the offending value (`/claims/3/outcome/verdict`; empty for the root).
    pub path: String,
    /// What is wrong there.
    pub message: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = if self.path.is_empty() { "/" } else { &self.path };
        write!(f, "{path}: {}", self.message)
    }
}

fn validator() -> &'static jsonschema::Validator {
    static V: OnceLock<jsonschema::Validator> = OnceLock::new();
    V.get_or_init(|| {
        let schema: serde_json::Value = serde_json::from_str(SCHEMA).expect("the published schema is JSON");
        jsonschema::draft202012::new(&schema).expect("the published schema is a valid draft 2020-12 schema")
    })
}

/// Every violation of the report schema in `doc` (none: it is valid).
pub fn violations(doc: &serde_json::Value) -> Vec<Violation> {
    validator()
        .iter_errors(doc)
        .map(|e| Violation { path: e.instance_path().to_string(), message: e.to_string() })
        .collect()
}

/// `Ok` when `doc` is a valid report, else a message naming every failing path.
pub fn validate(doc: &serde_json::Value) -> Result<(), String> {
    let v = violations(doc);
    if v.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = v.iter().take(20).map(|v| format!("  {v}")).collect();
    let more = if v.len() > 20 { format!("\n  … and {} more", v.len() - 20) } else { String::new() };
    Err(format!("the report breaks its schema ({SCHEMA_PATH}) at {} place(s):\n{}{more}", v.len(), list.join("\n")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::tests::sample_report;

    #[test]
    fn a_real_shaped_report_is_valid() {
        let doc = serde_json::to_value(sample_report()).unwrap();
        assert_eq!(violations(&doc), vec![]);
    }

    #[test]
    fn a_broken_report_is_rejected_with_the_failing_path() {
        let mut doc = serde_json::to_value(sample_report()).unwrap();
        doc["claims"][0]["outcome"]["verdict"] = "passed-ish".into();
        doc["summary"]["score"] = 140.0.into();
        doc["claims"][0]["outcome"]["evidence"]["ci"]["lo"] = serde_json::Value::Null; // a NaN, serialized
        doc.as_object_mut().unwrap().remove("settings");
        let v = violations(&doc);
        let paths: Vec<&str> = v.iter().map(|v| v.path.as_str()).collect();
        for p in ["/claims/0/outcome/verdict", "/summary/score", "/claims/0/outcome/evidence/ci", ""] {
            assert!(paths.iter().any(|q| q.starts_with(p)), "{p} not named in {paths:?}");
        }
        let err = validate(&doc).unwrap_err();
        assert!(err.contains("/claims/0/outcome/verdict") && err.contains(SCHEMA_PATH), "{err}");
    }

    #[test]
    fn an_unknown_field_and_a_wrong_schema_version_are_rejected() {
        let mut doc = serde_json::to_value(sample_report()).unwrap();
        doc["surprise"] = 1.into();
        doc["schema"] = 3.into();
        let v = violations(&doc);
        assert!(v.len() >= 2, "{v:?}");
    }
}

//! `report.csv`: one row per claim (id, category, points, verdict, metric,
//! value, op, threshold, unit, CI, n, sentence), for spreadsheets and scripts.

use crate::record::RunReport;

/// The columns, in order.
pub const HEADER: [&str; 13] = [
    "id",
    "category",
    "points",
    "verdict",
    "metric",
    "value",
    "op",
    "threshold",
    "unit",
    "ci_lo",
    "ci_hi",
    "n",
    "sentence",
];

fn num(v: Option<f64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

/// The CSV text of a report.
pub fn render(r: &RunReport) -> Result<String, ::csv::Error> {
    let mut w = ::csv::Writer::from_writer(Vec::new());
    w.write_record(HEADER)?;
    for c in &r.claims {
        let e = c.outcome.evidence.as_ref();
        w.write_record([
            c.id.clone(),
            c.category.clone(),
            c.points.to_string(),
            c.outcome.verdict.name().to_owned(),
            e.map(|e| e.metric.clone()).unwrap_or_default(),
            num(e.and_then(|e| e.value)),
            e.and_then(|e| e.op.clone()).unwrap_or_default(),
            num(e.and_then(|e| e.threshold)),
            e.map(|e| e.unit.clone()).unwrap_or_default(),
            num(e.and_then(|e| e.ci).map(|ci| ci.lo)),
            num(e.and_then(|e| e.ci).map(|ci| ci.hi)),
            e.and_then(|e| e.n).map(|n| n.to_string()).unwrap_or_default(),
            c.outcome.sentence.clone(),
        ])?;
    }
    let bytes = w.into_inner().map_err(|e| e.into_error())?;
    Ok(String::from_utf8(bytes).expect("every field is UTF-8"))
}

/// Parses CSV text back into rows, checking the header and that every row
/// has every column; the error names the row.
pub fn parse(text: &str) -> Result<Vec<Vec<String>>, String> {
    let mut r = ::csv::ReaderBuilder::new().has_headers(true).from_reader(text.as_bytes());
    let header: Vec<String> = r.headers().map_err(|e| e.to_string())?.iter().map(str::to_owned).collect();
    if header != HEADER {
        return Err(format!("header is {header:?}, expected {HEADER:?}"));
    }
    r.records()
        .enumerate()
        .map(|(i, rec)| {
            rec.map(|rec| rec.iter().map(str::to_owned).collect()).map_err(|e| format!("row {}: {e}", i + 2))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::tests::sample_report;

    #[test]
    fn one_row_per_claim_with_its_numbers() {
        let mut r = sample_report();
        r.claims[2].outcome.sentence = "has, a comma and \"quotes\"\nand a newline".into();
        let rows = parse(&render(&r).unwrap()).unwrap();
        assert_eq!(rows.len(), r.claims.len());
        assert_eq!(&rows[0][..4], ["F084", "performance", "5", "falsified"]);
        let value: f64 = rows[0][5].parse().unwrap();
        assert_eq!(Some(value), r.claims[0].outcome.evidence.as_ref().unwrap().value);
        assert_eq!(rows[2][12], r.claims[2].outcome.sentence);
        assert_eq!(rows[2][5], "");
    }

    #[test]
    fn a_broken_csv_is_refused() {
        assert!(parse("a,b\n1,2\n").unwrap_err().contains("header"));
        let good = render(&sample_report()).unwrap();
        let short = good.lines().take(2).collect::<Vec<_>>().join("\n") + "\nF1,x\n";
        assert!(parse(&short).unwrap_err().contains("row"));
    }
}

//! Reading an emitted SVG back: it must parse as XML with an `svg` root and a
//! four-number `viewBox` (claim F117), and its drawn text and embedded data
//! can be read back to compare with the report (claim F118).

use super::chart::{label, Plotted};

/// What an SVG document says, read back.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadBack {
    /// Every `<text>` element's content, in document order.
    pub texts: Vec<String>,
    /// The values in `<desc id="falsify-data">`, when present.
    pub data: Option<Vec<Plotted>>,
}

/// Parses `svg` and checks its root; the error says what is wrong.
pub fn read(svg: &str) -> Result<ReadBack, String> {
    let doc = roxmltree::Document::parse(svg).map_err(|e| format!("not well-formed XML: {e}"))?;
    let root = doc.root_element();
    if root.tag_name().name() != "svg" {
        return Err(format!("the root element is <{}>, not <svg>", root.tag_name().name()));
    }
    let view_box = root.attribute("viewBox").ok_or("the <svg> root has no viewBox")?;
    let numbers: Vec<f64> =
        view_box.split([' ', ',']).filter(|s| !s.is_empty()).filter_map(|s| s.parse().ok()).collect();
    if numbers.len() != 4 || numbers[2] <= 0.0 || numbers[3] <= 0.0 {
        return Err(format!("viewBox {view_box:?} is not four numbers with a positive width and height"));
    }
    let texts = doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .map(|n| n.descendants().filter(|t| t.is_text()).filter_map(|t| t.text()).collect::<String>())
        .collect();
    let data = match doc.descendants().find(|n| n.has_tag_name("desc") && n.attribute("id") == Some("falsify-data")) {
        Some(n) => Some(
            serde_json::from_str(n.text().unwrap_or(""))
                .map_err(|e| format!("the falsify-data description is not the plotted values: {e}"))?,
        ),
        None => None,
    };
    Ok(ReadBack { texts, data })
}

/// The expected values a read-back SVG fails to show: each must be in its
/// data, equal, and drawn as a text label. Empty when all are there.
pub fn missing_values(back: &ReadBack, expected: &[Plotted]) -> Vec<String> {
    let mut missing = Vec::new();
    let data = back.data.as_deref().unwrap_or_default();
    for e in expected {
        match data.iter().find(|d| d.label == e.label) {
            None => missing.push(format!("{}: not in the chart's data", e.label)),
            Some(d) if d.value != e.value => {
                missing.push(format!("{}: the chart says {} where the report says {}", e.label, d.value, e.value))
            }
            Some(_) => {}
        }
        let text = label(e.value);
        if !back.texts.iter().any(|t| t.contains(&text)) {
            missing.push(format!("{}: {text} is not drawn", e.label));
        }
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10" viewBox="0 0 10 10"><desc id="falsify-data">[{"label":"a","value":1.5}]</desc><text x="1" y="1">1.500</text></svg>"#;

    #[test]
    fn a_chart_reads_back() {
        let b = read(GOOD).unwrap();
        assert_eq!(b.texts, ["1.500"]);
        let expected = [Plotted { label: "a".into(), value: 1.5 }];
        assert_eq!(missing_values(&b, &expected), Vec::<String>::new());
    }

    #[test]
    fn broken_svgs_are_named() {
        let cases = [
            ("<svg viewBox=\"0 0 1 1\">", "not well-formed"),
            ("<html viewBox=\"0 0 1 1\"/>", "not <svg>"),
            ("<svg/>", "no viewBox"),
            ("<svg viewBox=\"0 0 0 5\"/>", "positive width"),
            ("<svg viewBox=\"0 0 5 5\"><desc id=\"falsify-data\">nope</desc></svg>", "not the plotted values"),
        ];
        for (svg, why) in cases {
            let e = read(svg).unwrap_err();
            assert!(e.contains(why), "{svg}: {e}");
        }
    }

    #[test]
    fn a_value_that_differs_or_is_not_drawn_is_reported() {
        let b = read(GOOD).unwrap();
        let wrong = [Plotted { label: "a".into(), value: 1.6 }, Plotted { label: "b".into(), value: 2.0 }];
        let m = missing_values(&b, &wrong);
        assert_eq!(m.len(), 4, "{m:?}");
        assert!(m[0].contains("says 1.5 where the report says 1.6") && m[1].contains("1.600 is not drawn"));
        assert!(m[2].contains("b: not in the chart's data"));
    }
}

//! The HTML report in a real browser: `falsify report` renders the committed
//! sample report against a previous run in its history (F084 passed there with
//! another value), headless Chromium screenshots the page at 1400×1000 and
//! dumps its DOM, and the test checks that something was drawn, that the page's
//! own text is there, and that the headline, the headline claims table and
//! what changed lead the page and are above the fold, in the DOM and in pixels.
//! Skips, saying why, when Chromium is not installed (`make deps` installs it).

use std::path::{Path, PathBuf};
use std::process::Command;

fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"].iter().find_map(|name| {
        std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(name)).find(|p| p.is_file())
    })
}

fn headless(browser: &Path, profile: &Path) -> Command {
    let mut c = Command::new(browser);
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        "--window-size=1400,1000",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    c
}

/// A decoded screenshot.
struct Shot {
    width: u32,
    height: u32,
    channels: usize,
    pixels: Vec<u8>,
}

impl Shot {
    fn load(path: &Path) -> Shot {
        let decoder = png::Decoder::new(std::fs::File::open(path).unwrap());
        let mut reader = decoder.read_info().unwrap();
        let mut pixels = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut pixels).unwrap();
        Shot { width: info.width, height: info.height, channels: info.color_type.samples(), pixels }
    }

    fn rgb(&self, x: u32, y: u32) -> [u8; 3] {
        let at = ((y * self.width + x) as usize) * self.channels;
        if self.channels < 3 {
            [self.pixels[at]; 3]
        } else {
            [self.pixels[at], self.pixels[at + 1], self.pixels[at + 2]]
        }
    }

    /// Fraction of pixels in rows `rows` that are not (near) white.
    fn inked(&self, rows: std::ops::Range<u32>) -> f64 {
        let (mut ink, mut all) = (0usize, 0usize);
        for y in rows.start.min(self.height)..rows.end.min(self.height) {
            for x in 0..self.width {
                all += 1;
                if self.rgb(x, y).iter().any(|&c| c < 230) {
                    ink += 1;
                }
            }
        }
        ink as f64 / all.max(1) as f64
    }

    /// The rows holding at least `run` consecutive pixels of `colour` (each
    /// channel within 3): the bands of the page's distinctive backgrounds.
    fn rows_of(&self, colour: [u8; 3], run: u32) -> Vec<u32> {
        let near = |p: [u8; 3]| p.iter().zip(colour).all(|(&a, b)| a.abs_diff(b) <= 3);
        (0..self.height)
            .filter(|&y| {
                let mut longest = 0;
                let mut current = 0;
                for x in 0..self.width {
                    current = if near(self.rgb(x, y)) { current + 1 } else { 0 };
                    longest = longest.max(current);
                }
                longest >= run
            })
            .collect()
    }
}

/// The page's header (`header`), the headline table's header row
/// (`table.headline th`) and the changes box (`.changes`), as html.rs paints them.
const HEADER_BAND: [u8; 3] = [0x20, 0x23, 0x2a];
const HEADLINE_TABLE_HEAD: [u8; 3] = [0xdd, 0xe6, 0xf0];
const CHANGES_BOX: [u8; 3] = [0xff, 0xf8, 0xe1];

/// The committed sample report as it was a run earlier: F084 passed at 2.5x.
fn previous_run(report: &serde_json::Value) -> serde_json::Value {
    let mut old = report.clone();
    old["provenance"]["timestamp"] = (report["provenance"]["timestamp"].as_u64().unwrap() - 3600).into();
    let f084 = old["claims"].as_array_mut().unwrap().iter_mut().find(|c| c["id"] == "F084").unwrap();
    f084["outcome"]["verdict"] = "pass".into();
    f084["outcome"]["sentence"] = "decode 2.50x".into();
    f084["outcome"]["evidence"]["value"] = 2.5.into();
    f084["outcome"]["evidence"]["ci"] = serde_json::Value::Null;
    old
}

#[test]
fn the_html_report_renders_in_headless_chromium() {
    let Some(browser) = chromium() else {
        eprintln!("skipped: chromium is not installed (apt-get install chromium, or `make deps`)");
        return;
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::env::temp_dir().join(format!("falsify-browser-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let fixture = root.join("tests/fixtures/report-v2-sample.json");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&fixture).unwrap()).unwrap();
    std::fs::create_dir_all(out.join("history")).unwrap();
    std::fs::write(
        out.join("history/report-000000000001-000000000-1.json"),
        serde_json::to_vec(&previous_run(&report)).unwrap(),
    )
    .unwrap();
    let status =
        Command::new(env!("CARGO_BIN_EXE_falsify")).args(["report", "--out"]).arg(&out).arg(&fixture).status().unwrap();
    assert!(status.success());
    let page = out.join("report.html");
    let url = format!("file://{}", page.display());

    let png = out.join("report.png");
    let shot = headless(&browser, &out.join("profile-shot"))
        .arg(format!("--screenshot={}", png.display()))
        .arg(&url)
        .output()
        .unwrap();
    assert!(png.is_file(), "no screenshot: {}", String::from_utf8_lossy(&shot.stderr));
    let shot = Shot::load(&png);
    assert_eq!((shot.width, shot.height), (1400, 1000), "the screenshot is the 1400×1000 window");
    let summary_ink = shot.inked(0..400);
    let page_ink = shot.inked(0..1000);
    assert!(summary_ink > 0.05, "the top of the page (the summary) is blank: {summary_ink:.3} inked");
    assert!(page_ink > 0.05 && page_ink < 0.95, "the page is blank or solid: {page_ink:.3} inked");
    let band = |colour, name| {
        let rows = shot.rows_of(colour, 300);
        assert!(!rows.is_empty(), "{name} is not above the fold (no 300-pixel run of {colour:?} in the top 1000 px)");
        (rows[0], rows[rows.len() - 1])
    };
    let header = band(HEADER_BAND, "the page header");
    let table = band(HEADLINE_TABLE_HEAD, "the headline claims table");
    let changes = band(CHANGES_BOX, "the changes box");
    assert!(
        header.1 < table.0 && table.1 < changes.0,
        "header {header:?}, table {table:?} and changes {changes:?} in order"
    );
    assert!(changes.1 + 1 < shot.height, "the changes box runs past the fold at {changes:?}");

    let dom = headless(&browser, &out.join("profile-dom")).arg("--dump-dom").arg(&url).output().unwrap();
    let dom = String::from_utf8_lossy(&dom.stdout);
    for text in [
        "falsify report",
        "Summary",
        "headline score (earned ÷ all points)",
        "1 pending",
        "F084",
        "F030",
        "cuda: no CUDA device",
        "F097",
        "Provenance",
    ] {
        assert!(dom.contains(text), "the rendered page lacks {text:?}");
    }
    assert!(dom.contains("<svg"), "the rendered page has no chart");
    let at = |s: &str| dom.find(s).unwrap_or_else(|| panic!("the rendered page lacks {s:?}"));
    let order = [
        "headline score (earned ÷ all points)",
        "<table class=\"headline\"",
        "id=\"changes\"",
        "id=\"charts\"",
        "<article",
    ];
    for w in order.windows(2) {
        assert!(at(w[0]) < at(w[1]), "{} should come before {} in the rendered DOM", w[0], w[1]);
    }
    for text in [
        "Verdicts that flipped (1)",
        "pass</span></span> → <span class=\"v-falsified\">",
        "2.500 → 0.6028",
        "href=\"#F084\"",
    ] {
        assert!(at(text) < at("id=\"charts\""), "{text:?} is not before the charts");
    }
    std::fs::remove_dir_all(&out).unwrap();
}

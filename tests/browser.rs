//! The HTML report in a real browser: `falsify report` renders the committed
//! sample report, headless Chromium screenshots the page and dumps its DOM,
//! and the test checks that something was drawn (a non-blank image whose top,
//! the summary, is not empty) and that the page's own text is there.
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
        "--window-size=1280,900",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    c
}

/// Fraction of pixels in rows `rows` that are not (near) white.
fn inked(png_path: &Path, rows: std::ops::Range<u32>) -> f64 {
    let decoder = png::Decoder::new(std::fs::File::open(png_path).unwrap());
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    let (w, h) = (info.width, info.height);
    let (mut ink, mut all) = (0usize, 0usize);
    for y in rows.start.min(h)..rows.end.min(h) {
        for x in 0..w {
            let at = ((y * w + x) as usize) * channels;
            let px = &buf[at..at + channels.min(3)];
            all += 1;
            if px.iter().any(|&c| c < 230) {
                ink += 1;
            }
        }
    }
    ink as f64 / all.max(1) as f64
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
    let status = Command::new(env!("CARGO_BIN_EXE_falsify"))
        .args(["report", "--out"])
        .arg(&out)
        .arg(root.join("tests/fixtures/report-v2-sample.json"))
        .status()
        .unwrap();
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
    let summary_ink = inked(&png, 0..400);
    let page_ink = inked(&png, 0..900);
    assert!(summary_ink > 0.05, "the top of the page (the summary) is blank: {summary_ink:.3} inked");
    assert!(page_ink > 0.05 && page_ink < 0.95, "the page is blank or solid: {page_ink:.3} inked");

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
    std::fs::remove_dir_all(&out).unwrap();
}

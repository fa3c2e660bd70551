//! The terminal UI of `falsify top` (ratatui). The engine decodes on its own
//! thread and sends one [`TokenSample`] per token down a channel; the UI
//! thread drains the channel four times a second, redraws, and handles keys.
//!
//! Views: the brick pipeline (default), `b` budgets and their derivation,
//! `h` the token latency histogram, `m` memory bandwidth per brick, `Enter`
//! a drill-down into the selected brick (its latency histogram with p50, p99,
//! p999 and its score parts). `↑`/`↓` select, `Esc` goes back, `q` quits.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Bar, BarChart, BarGroup, Block, Paragraph, Row, Table};
use ratatui::Frame;

use super::live::{Decoder, Recorder, TokenSample};
use super::Session;
use crate::bench::bricks::BrickBudget;
use crate::bench::roofline::HostProbe;
use crate::bench::score::{self, BrickScore};
use crate::model::Brick;
use crate::stats;

/// Which view is on screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// Every brick: µs per token, budget, % of budget, score, grade.
    Pipeline,
    /// Budgets and their roofline derivation.
    Budget,
    /// Histogram of the per-token latency.
    Histogram,
    /// Achieved bandwidth per brick against the measured read bandwidth.
    Memory,
    /// One brick in detail.
    Drill(Brick),
}

/// The UI's state: what it has heard from the engine and what it shows.
pub struct App {
    /// The view on screen.
    pub view: View,
    /// The selected brick's index in [`Brick::ALL`].
    pub selected: usize,
    /// The samples heard so far.
    pub recorder: Recorder,
    /// Set by `q`.
    pub quit: bool,
    model: String,
    threads: usize,
    kernels: String,
    probe: HostProbe,
    budgets: Vec<BrickBudget>,
}

/// A bar of `width` cells filled to `fraction` (capped at 1).
fn bar(fraction: f64, width: usize) -> String {
    let full = ((fraction.clamp(0.0, 1.0) * width as f64).round()) as usize;
    format!("{}{}", "█".repeat(full), "·".repeat(width - full))
}

impl App {
    /// A UI for `session`, with nothing heard yet.
    pub fn new(session: &Session<'_>) -> App {
        App {
            view: View::Pipeline,
            selected: 0,
            recorder: Recorder::new(512),
            quit: false,
            model: session.model_path.clone(),
            threads: session.threads,
            kernels: session.kernels.clone(),
            probe: session.probe.clone(),
            budgets: session.budgets.clone(),
        }
    }

    /// Takes in a sample from the engine.
    pub fn hear(&mut self, s: TokenSample) {
        self.recorder.push(s);
    }

    /// Acts on a key.
    pub fn on_key(&mut self, key: KeyCode) {
        match key {
            KeyCode::Char('q') => self.quit = true,
            KeyCode::Char('b') => self.view = View::Budget,
            KeyCode::Char('h') => self.view = View::Histogram,
            KeyCode::Char('m') => self.view = View::Memory,
            KeyCode::Char('p') | KeyCode::Esc => self.view = View::Pipeline,
            KeyCode::Enter => self.view = View::Drill(Brick::ALL[self.selected]),
            KeyCode::Up => self.selected = self.selected.saturating_sub(1),
            KeyCode::Down => self.selected = (self.selected + 1).min(Brick::ALL.len() - 1),
            _ => {}
        }
    }

    fn scores(&self) -> Vec<BrickScore> {
        self.recorder.scores(&self.budgets, &self.probe)
    }

    /// Draws the current view.
    pub fn render(&self, f: &mut Frame) {
        let [head, body, foot] =
            Layout::vertical([Constraint::Length(3), Constraint::Min(5), Constraint::Length(1)]).areas(f.area());
        let scores = self.scores();
        let windows = self.recorder.window_tok_per_s(16);
        let cv = stats::Summary::of(&windows).map_or(String::from("–"), |s| format!("{:.1}%", 100.0 * s.cv));
        let model_score = score::model_score(scores.iter().map(|s| s.score));
        let title = format!(
            " {} · {} threads · {} kernels · {:.1} tok/s (CV {cv}) · {} tokens · score {:.1} ({}) ",
            self.model,
            self.threads,
            self.kernels,
            self.recorder.tok_per_s(),
            self.recorder.total,
            model_score,
            score::grade(model_score)
        );
        let worst = score::bottleneck(&scores);
        let bottleneck = worst.map(|b| b.name.clone()).unwrap_or_default();
        let excess = worst.map_or(String::new(), |b| {
            format!(" (+{:.1} µs/token over budget, {:.2}×)", b.actual_us - b.budget_us, b.gap_factor)
        });
        let hotspot = score::hotspot(&scores).map_or("", |b| b.name.as_str());
        let headline = format!(
            "bottleneck (max actual − budget): {bottleneck}{excess} · most time: {hotspot} · read {:.1} GB/s · int8 {:.0} GOPS · f32 {:.0} GFLOPS · bricks cover {:.1}%",
            self.probe.read_bandwidth_gb_s,
            self.probe.int8_gops,
            self.probe.f32_gflops,
            100.0 * self.recorder.coverage()
        );
        f.render_widget(Paragraph::new(headline).block(Block::bordered().title(title)), head);
        match self.view {
            View::Pipeline => self.pipeline(f, body, &scores, &bottleneck),
            View::Budget => self.budget(f, body, &scores),
            View::Histogram => {
                let wall = self.recorder.wall_us();
                self.latency(f, body, "token latency (wall time per decoded token)", &wall)
            }
            View::Memory => self.memory(f, body, &scores),
            View::Drill(b) => self.drill(f, body, b, &scores[b as usize]),
        }
        let keys = "↑/↓ select · Enter drill down · b budgets · h histogram · m memory · Esc back · q quit";
        f.render_widget(Paragraph::new(keys).style(Style::new().fg(Color::DarkGray)), foot);
    }

    fn pipeline(&self, f: &mut Frame, area: Rect, scores: &[BrickScore], bottleneck: &str) {
        let rows = scores.iter().enumerate().map(|(i, s)| {
            let pct = if s.budget_us > 0.0 { s.actual_us / s.budget_us } else { 0.0 };
            let mark = if s.name == bottleneck { "◀ bottleneck" } else { "" };
            let mut style = Style::new();
            if s.name == bottleneck {
                style = style.fg(Color::Red).add_modifier(Modifier::BOLD);
            }
            if i == self.selected {
                style = style.add_modifier(Modifier::REVERSED);
            }
            Row::new(vec![
                s.name.clone(),
                format!("{:.1}", s.actual_us),
                format!("{:.1}", s.budget_us),
                format!("{} {:>5.0}%", bar(pct, 20), 100.0 * pct),
                format!("{:.1}", s.score),
                s.grade.clone(),
                mark.into(),
            ])
            .style(style)
        });
        let widths = [
            Constraint::Length(12),
            Constraint::Length(10),
            Constraint::Length(10),
            Constraint::Length(28),
            Constraint::Length(6),
            Constraint::Length(6),
            Constraint::Min(12),
        ];
        let header = Row::new(["brick", "µs/token", "budget µs", "% of budget", "score", "grade", ""])
            .style(Style::new().add_modifier(Modifier::BOLD));
        f.render_widget(
            Table::new(rows, widths).header(header).block(Block::bordered().title(" brick pipeline ")),
            area,
        );
    }

    fn budget(&self, f: &mut Frame, area: Rect, scores: &[BrickScore]) {
        let rows = self.budgets.iter().zip(scores).map(|(b, s)| {
            let bound = if b.memory_us >= b.compute_us { "memory" } else { "compute" };
            Row::new(vec![
                b.name.clone(),
                format!("{:.3}", b.bytes_per_token as f64 / 1e6),
                format!("{:.3}", b.ops_per_token as f64 / 1e6),
                format!("{bound} ({})", if b.compute == crate::bench::bricks::Compute::Int8 { "int8" } else { "f32" }),
                format!("{:.1}", b.roofline_us),
                format!("{:.1}", b.budget_us),
                format!("{:.1}", s.actual_us),
                format!("{:.2}×", s.gap_factor),
            ])
        });
        let widths = [Constraint::Length(12), Constraint::Length(9), Constraint::Length(10), Constraint::Length(15)]
            .into_iter()
            .chain([Constraint::Length(12); 4]);
        let header =
            Row::new(["brick", "MB/token", "Mops/token", "bound", "roofline µs", "budget µs", "actual µs", "gap"])
                .style(Style::new().add_modifier(Modifier::BOLD));
        let title = format!(
            " budgets = roofline × allowance; roofline = max(bytes ÷ {:.1} GB/s, ops ÷ peak) ",
            self.probe.read_bandwidth_gb_s
        );
        f.render_widget(Table::new(rows, widths).header(header).block(Block::bordered().title(title)), area);
    }

    fn memory(&self, f: &mut Frame, area: Rect, scores: &[BrickScore]) {
        let bw = self.probe.read_bandwidth_gb_s;
        let rows = scores.iter().map(|s| {
            Row::new(vec![
                s.name.clone(),
                format!("{:.2}", s.achieved_gb_s),
                format!("{} {:>5.1}%", bar(s.bandwidth_efficiency, 30), 100.0 * s.bandwidth_efficiency),
            ])
        });
        let bytes: u64 = self.budgets.iter().map(|b| b.bytes_per_token).sum();
        let wall = stats::Summary::of(&self.recorder.wall_us()).map_or(0.0, |s| s.mean);
        let total = if wall > 0.0 { bytes as f64 / wall / 1e3 } else { 0.0 };
        let title = format!(
            " memory bandwidth: {total:.1} GB/s per token overall, {:.0}% of the measured {bw:.1} GB/s ",
            100.0 * total / bw
        );
        let widths = [Constraint::Length(12), Constraint::Length(10), Constraint::Min(30)];
        let header = Row::new(["brick", "GB/s", "of read bandwidth"]).style(Style::new().add_modifier(Modifier::BOLD));
        f.render_widget(Table::new(rows, widths).header(header).block(Block::bordered().title(title)), area);
    }

    fn latency(&self, f: &mut Frame, area: Rect, what: &str, xs: &[f64]) {
        let title = match stats::Summary::of(xs) {
            Ok(s) => {
                format!(" {what}: p50 {:.1} µs · p99 {:.1} µs · p999 {:.1} µs · n {} ", s.median, s.p99, s.p999, s.n)
            }
            Err(_) => format!(" {what}: waiting for samples "),
        };
        let h = stats::histogram(xs, 12);
        let bars: Vec<Bar> = match xs.is_empty() {
            true => Vec::new(),
            false => (h.counts.iter().enumerate())
                .map(|(i, &n)| Bar::default().value(n).label(Line::from(format!("{:.0}", h.lo + i as f64 * h.width))))
                .collect(),
        };
        f.render_widget(
            BarChart::default()
                .data(BarGroup::default().bars(&bars))
                .bar_width(6)
                .bar_gap(1)
                .block(Block::bordered().title(title)),
            area,
        );
    }

    fn drill(&self, f: &mut Frame, area: Rect, brick: Brick, s: &BrickScore) {
        let [parts, hist] = Layout::vertical([Constraint::Length(4), Constraint::Min(5)]).areas(area);
        let text = vec![
            Line::from(format!(
                "{}: {:.1} µs/token, budget {:.1} µs (gap {:.2}×), score {:.1} ({})",
                s.name, s.actual_us, s.budget_us, s.gap_factor, s.score, s.grade
            )),
            Line::from(format!(
                "compute {:.3} · bandwidth {:.3} · latency ratio {:.3} · stability {:.3} (CV {:.1}%)",
                s.compute_efficiency,
                s.bandwidth_efficiency,
                s.latency_ratio,
                s.stability,
                100.0 * s.cv
            )),
        ];
        f.render_widget(Paragraph::new(text).block(Block::bordered().title(format!(" {} ", brick.name()))), parts);
        self.latency(f, hist, &format!("{} latency per token", brick.name()), &self.recorder.brick_us(brick));
    }
}

/// The text of `app`'s current view drawn on a `width` × `height` screen
/// (ratatui's test backend): what a terminal would show, for tests and claims.
pub fn snapshot(app: &App, width: u16, height: u16) -> String {
    let mut t = ratatui::Terminal::new(ratatui::backend::TestBackend::new(width, height))
        .expect("the test backend always starts");
    t.draw(|f| app.render(f)).expect("drawing to the test backend cannot fail");
    let buf = t.backend().buffer();
    (0..buf.area.height).map(|y| (0..buf.area.width).map(|x| buf[(x, y)].symbol()).collect::<String>() + "\n").collect()
}

/// Runs the UI until `q`: the engine decodes on a second thread and the UI redraws four times a second.
pub fn run(session: &Session<'_>) -> Result<(), String> {
    use std::io::IsTerminal;
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        return Err("falsify top needs a terminal on stdin and stdout; use --headless [--json] otherwise".into());
    }
    let mut decoder = Decoder::new(session.model, &session.prompt, session.window).map_err(|e| e.to_string())?;
    let stop = AtomicBool::new(false);
    let (tx, rx) = mpsc::channel::<TokenSample>();
    let mut app = App::new(session);
    std::thread::scope(|s| {
        let engine = s.spawn(|| {
            super::live::pin_to_first_core();
            while !stop.load(Ordering::Relaxed) {
                let sample = decoder.step().map_err(|e| e.to_string())?;
                if tx.send(sample).is_err() {
                    break;
                }
            }
            Ok(())
        });
        let mut terminal = match ratatui::try_init() {
            Ok(t) => t,
            Err(e) => {
                stop.store(true, Ordering::Relaxed);
                return Err(format!("cannot take over the terminal: {e}"));
            }
        };
        let ui = (|| -> Result<(), String> {
            while !app.quit {
                for sample in rx.try_iter() {
                    app.hear(sample);
                }
                terminal.draw(|f| app.render(f)).map_err(|e| e.to_string())?;
                if event::poll(Duration::from_millis(250)).map_err(|e| e.to_string())? {
                    if let Event::Key(k) = event::read().map_err(|e| e.to_string())? {
                        if k.kind == KeyEventKind::Press {
                            app.on_key(k.code);
                        }
                    }
                }
                if engine.is_finished() {
                    break;
                }
            }
            Ok(())
        })();
        let restored = ratatui::try_restore().map_err(|e| format!("cannot restore the terminal: {e}"));
        stop.store(true, Ordering::Relaxed);
        drop(rx);
        let engine = engine.join().map_err(|_| "the engine thread panicked".to_string())?;
        ui.and(engine).and(restored)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests::tied_model;

    fn screen(app: &App) -> String {
        snapshot(app, 140, 30)
    }

    fn app_with_samples(m: &crate::model::Model, n: usize) -> App {
        let session = Session::new(m, "tiny.gguf", vec![1, 2, 3], 8, HostProbe::stated(10.0, 50.0, 20.0), 1.5);
        let mut app = App::new(&session);
        let mut d = Decoder::new(m, &session.prompt, session.window).unwrap();
        for _ in 0..n {
            app.hear(d.step().unwrap());
        }
        app
    }

    #[test]
    fn the_pipeline_shows_every_brick_and_the_bottleneck() {
        let m = tied_model();
        let app = app_with_samples(&m, 24);
        let s = screen(&app);
        for b in Brick::ALL {
            assert!(s.contains(b.name()), "no {} in\n{s}", b.name());
        }
        assert!(s.contains("◀ bottleneck") && s.contains("tok/s") && s.contains("score"), "{s}");
    }

    #[test]
    fn it_renders_before_any_sample_without_panicking() {
        let m = tied_model();
        let mut app = app_with_samples(&m, 0);
        for key in [KeyCode::Char('b'), KeyCode::Char('h'), KeyCode::Char('m'), KeyCode::Enter, KeyCode::Esc] {
            app.on_key(key);
            screen(&app);
        }
    }

    #[test]
    fn keys_switch_views_and_the_drill_down_shows_a_histogram() {
        let m = tied_model();
        let mut app = app_with_samples(&m, 40);
        app.on_key(KeyCode::Down);
        app.on_key(KeyCode::Down);
        app.on_key(KeyCode::Enter);
        assert_eq!(app.view, View::Drill(Brick::Qkv));
        let s = screen(&app);
        for part in ["qkv latency per token", "p50", "p99", "p999", "stability", "█"] {
            assert!(s.contains(part), "drill-down lacks {part:?}:\n{s}");
        }
        app.on_key(KeyCode::Char('b'));
        assert!(screen(&app).contains("roofline µs"));
        app.on_key(KeyCode::Char('m'));
        assert!(screen(&app).contains("of read bandwidth"));
        app.on_key(KeyCode::Char('h'));
        assert!(screen(&app).contains("token latency"));
        app.on_key(KeyCode::Esc);
        assert_eq!(app.view, View::Pipeline);
        app.on_key(KeyCode::Char('q'));
        assert!(app.quit);
    }
}

//! An OpenAI-compatible stub server for tests: streams `max_tokens` text
//! chunks per `/v1/completions` request, the first after `ttft` and each next
//! one `gap` later, then a usage chunk and `data: [DONE]`; `/health` answers
//! 200. It serves on a free loopback port until the test process ends.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

/// A running stub: its base URL (ending in `/v1`).
pub struct Stub {
    /// Base URL, `http://127.0.0.1:PORT/v1`.
    pub base: String,
}

/// Starts a stub whose streams wait `ttft` for the first token and `gap`
/// between tokens, every request served at once on its own thread.
pub fn start(ttft: Duration, gap: Duration) -> Stub {
    launch(ttft, gap, true)
}

/// [`start`] for a server that does not batch: one request at a time, the
/// others queued until it ends.
pub fn start_serial(ttft: Duration, gap: Duration) -> Stub {
    launch(ttft, gap, false)
}

fn launch(ttft: Duration, gap: Duration, concurrent: bool) -> Stub {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            match concurrent {
                true => drop(std::thread::spawn(move || serve(conn, ttft, gap))),
                false => serve(conn, ttft, gap),
            }
        }
    });
    Stub { base: format!("http://127.0.0.1:{port}/v1") }
}

fn serve(conn: TcpStream, ttft: Duration, gap: Duration) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut head = String::new();
    let mut length = 0;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let mut out = conn;
    if head.starts_with("GET /health") {
        let _ = out.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        return;
    }
    let req: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let n = req["max_tokens"].as_u64().unwrap_or(1);
    let _ = out.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n");
    std::thread::sleep(ttft);
    for i in 0..n {
        if i > 0 {
            std::thread::sleep(gap);
        }
        let _ = out.write_all(format!("data: {{\"choices\":[{{\"index\":0,\"text\":\"t{i}\"}}]}}\n\n").as_bytes());
        let _ = out.flush();
    }
    let usage = format!("data: {{\"choices\":[],\"usage\":{{\"completion_tokens\":{n}}}}}\n\ndata: [DONE]\n\n");
    let _ = out.write_all(usage.as_bytes());
}

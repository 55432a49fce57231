//! `bench floor`: the physical floor of a delivery on this machine. One
//! thread writes the same pre-framed WebSocket text frame (~100 bytes, built
//! once) to N loopback sockets with one `write` each, round after round,
//! and its CPU per write is read from `/proc/thread-self/stat`. No framing,
//! no queue, no wake-up of a writer task: what is left is the kernel's cost
//! of a small loopback TCP write (and of waking the reader), which every
//! server under test pays at least once per delivery.
//!
//! The readers (the subscribers' side) run on a tokio runtime of one thread
//! in this process and only drain their sockets; their CPU is not counted.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;

use super::Report;

#[derive(Debug, Clone, clap::Args)]
pub struct FloorOptions {
    /// Loopback sockets written to (the subscribers).
    #[arg(long, default_value_t = 1_000)]
    pub connections: usize,
    /// Rounds: each writes the frame once to every socket.
    #[arg(long, default_value_t = 500)]
    pub rounds: u64,
    /// Rounds per second; 0 writes round after round without pause.
    #[arg(long, default_value_t = 50)]
    pub rate: u64,
    /// Payload bytes of the frame (under 126: a 2-byte header).
    #[arg(long, default_value_t = 100)]
    pub payload: usize,
}

pub fn run(options: &FloorOptions) -> anyhow::Result<Report> {
    anyhow::ensure!(options.payload < 126, "--payload must be under 126 bytes");
    // The frame: FIN + text opcode, unmasked (server to client), 7-bit length.
    let mut frame = vec![0x81, options.payload as u8];
    let body = format!(
        r#"{{"type":"event","room":"floor","seq":1,"ts":0,"data":{{"x":"{}"}}}}"#,
        ""
    );
    let mut payload = body.into_bytes();
    payload.resize(options.payload, b' ');
    frame.extend_from_slice(&payload);

    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let mut writers = Vec::with_capacity(options.connections);
    let mut readers = Vec::with_capacity(options.connections);
    for _ in 0..options.connections {
        let reader = TcpStream::connect(addr)?;
        let (writer, _) = listener.accept()?;
        writer.set_nodelay(true)?;
        reader.set_nonblocking(true)?;
        writers.push(writer);
        readers.push(reader);
    }

    // The readers: drain every socket, count bytes.
    let received = Arc::new(AtomicU64::new(0));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let reader_thread = {
        let received = received.clone();
        std::thread::spawn(move || {
            runtime.block_on(async move {
                let mut tasks = tokio::task::JoinSet::new();
                for reader in readers {
                    let received = received.clone();
                    tasks.spawn(async move {
                        let Ok(mut reader) = tokio::net::TcpStream::from_std(reader) else {
                            return;
                        };
                        let mut buf = vec![0u8; 16 * 1024];
                        while let Ok(n) = reader.read(&mut buf).await {
                            if n == 0 {
                                break;
                            }
                            received.fetch_add(n as u64, Ordering::Relaxed);
                        }
                    });
                }
                while tasks.join_next().await.is_some() {}
            })
        })
    };

    let interval = (options.rate > 0).then(|| Duration::from_secs_f64(1.0 / options.rate as f64));
    let cpu_start = thread_cpu_seconds().unwrap_or(0.0);
    let started = Instant::now();
    let mut next = started;
    for _ in 0..options.rounds {
        if let Some(interval) = interval {
            next += interval;
            if let Some(wait) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        for writer in &mut writers {
            writer.write_all(&frame)?;
        }
    }
    let cpu = thread_cpu_seconds().unwrap_or(0.0) - cpu_start;
    let seconds = started.elapsed().as_secs_f64();
    let writes = options.rounds * options.connections as u64;
    let expected = writes * frame.len() as u64;
    let deadline = Instant::now() + Duration::from_secs(30);
    while received.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(writers);
    let _ = reader_thread.join();

    let mut report = Report::new("floor", "loopback write");
    report.add("connections", options.connections as u64);
    report.add("rounds", options.rounds);
    report.add("rate_per_sec", options.rate);
    report.add("frame_bytes", frame.len() as u64);
    report.add("writes", writes);
    report.add("bytes_received", received.load(Ordering::Relaxed));
    report.add("seconds", seconds);
    report.add("writer_cpu_seconds", cpu);
    report.add(
        "cpu_us_per_write",
        (cpu * 1e6 / writes.max(1) as f64 * 1000.0).round() / 1000.0,
    );
    Ok(report)
}

/// User + system CPU of the calling thread, in seconds (`USER_HZ` = 100).
fn thread_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

//! Log setup shared by every process: `tracing` to stderr, human-readable or JSON, filtered
//! by `RUST_LOG` (default `info`). Stdout is kept for the machine-readable lines a process
//! prints on purpose (e.g. a server's bound address).
//!
//! Lines are formatted on the thread that logs and appended to a shared buffer, which a
//! background thread writes out: the gateway logs one line per request, and a `write` syscall
//! per line on the request path cost ≈ 10 % of its CPU at 5,000 payments/s; a queue whose
//! writer thread was woken for every line still cost ≈ 4 %. Here a line wakes the writer
//! only when the buffer was empty, and the writer rests [`WRITE_GAP`] after each write, so
//! under load many lines go out per wake-up and per `write`, and when idle a line is written
//! at once. Nothing is dropped: a logger that finds the buffer over [`MAX_BUFFERED`] writes
//! it out itself. A process killed outright loses at most the lines of the last gap.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// How long the writer thread rests after a write before it writes again.
const WRITE_GAP: Duration = Duration::from_millis(2);
/// Bytes buffered beyond which a logger writes the buffer out itself (back-pressure).
const MAX_BUFFERED: usize = 4 * 1024 * 1024;

/// Keeps the log writer running; dropping it writes out what is buffered. Hold it until exit.
#[must_use = "dropping the guard stops the log writer"]
pub struct LogGuard {
    log: BufferedLog,
    writer: Option<JoinHandle<()>>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.log.shared.stopping.store(true, Ordering::Release);
        if let Some(writer) = self.writer.take() {
            writer.thread().unpark();
            let _ = writer.join();
        }
        self.log.write_out();
    }
}

/// Where formatted lines go: a buffer shared by every logging thread.
#[derive(Clone)]
struct BufferedLog {
    shared: Arc<Shared>,
}

struct Shared {
    lines: Mutex<Vec<u8>>,
    /// Held while writing to stderr, and taken before `lines`, so chunks leave in order.
    output: Mutex<std::io::Stderr>,
    stopping: AtomicBool,
    /// The writer thread, to wake when a line arrives in an empty buffer.
    writer: std::sync::OnceLock<std::thread::Thread>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding either lock leaves at worst a partial line: keep logging.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl BufferedLog {
    fn new() -> Self {
        BufferedLog {
            shared: Arc::new(Shared {
                lines: Mutex::new(Vec::with_capacity(64 * 1024)),
                output: Mutex::new(std::io::stderr()),
                stopping: AtomicBool::new(false),
                writer: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Writes out everything buffered so far.
    fn write_out(&self) {
        let mut output = lock(&self.shared.output);
        let chunk = std::mem::take(&mut *lock(&self.shared.lines));
        if !chunk.is_empty() {
            // Nowhere to report a failing stderr; the lines are gone either way.
            let _ = output.write_all(&chunk);
            let _ = output.flush();
        }
    }

    fn start_writer(&self) -> std::io::Result<JoinHandle<()>> {
        let log = self.clone();
        let handle = std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || {
                while !log.shared.stopping.load(Ordering::Acquire) {
                    log.write_out();
                    std::thread::sleep(WRITE_GAP);
                    // Woken by the first line into an empty buffer (a wake-up while awake is
                    // kept for this park); the timeout bounds the lines logged before this
                    // thread was known to the loggers.
                    std::thread::park_timeout(Duration::from_secs(1));
                }
            })?;
        let _ = self.shared.writer.set(handle.thread().clone());
        Ok(handle)
    }
}

impl Write for BufferedLog {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let (was_empty, full) = {
            let mut lines = lock(&self.shared.lines);
            let was_empty = lines.is_empty();
            lines.extend_from_slice(bytes);
            (was_empty, lines.len() >= MAX_BUFFERED)
        };
        if full {
            self.write_out();
        } else if was_empty {
            if let Some(writer) = self.shared.writer.get() {
                writer.unpark();
            }
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BufferedLog {
    type Writer = BufferedLog;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Installs the global subscriber. Calling it twice is harmless (the second call is ignored).
pub fn init(json: bool) -> LogGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let log = BufferedLog::new();
    // Without its thread (cannot spawn), lines are written out when the buffer fills and at
    // exit; logging still works.
    let writer = log.start_writer().ok();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(log.clone())
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal());
    let result = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
    // An already-installed subscriber (tests) is fine.
    drop(result);
    LogGuard { log, writer }
}

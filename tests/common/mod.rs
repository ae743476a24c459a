//! Test harness: starts the real `backstop` binary on free loopback ports and talks raw
//! HTTP/1.1 to it, so limits can be probed byte by byte.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]
// End-to-end tests measure wall-clock time on purpose.
#![allow(clippy::disallowed_methods)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A running backstop process; killed on drop if still running.
pub struct Backstop {
    child: Child,
    pub addr: SocketAddr,
    pub admin_addr: Option<SocketAddr>,
    pub dir: tempfile::TempDir,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

pub mod oidc;
pub mod primary;

/// Config text with fresh ports and a private data dir, plus `top` fields and `tables`. Unless
/// `tables` has its own `[primary]`, the primary is a loopback port with nothing listening.
pub fn config_text(dir: &Path, top: &str, tables: &str) -> String {
    let primary = if tables.contains("[primary]") {
        String::new()
    } else {
        format!(
            "[primary]\norigin = \"{}\"\n",
            primary::closed_port_origin()
        )
    };
    format!(
        "listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\n{top}\n{primary}{tables}\n",
        dir.join("data").display()
    )
}

impl Backstop {
    /// Starts `backstop serve` with a config built from `top` (top-level fields) and `tables`
    /// (TOML tables), and environment `env`.
    pub fn start(top: &str, tables: &str, env: &[(&str, &str)]) -> Self {
        Self::start_with_args(top, tables, env, &[])
    }

    pub fn start_with_args(top: &str, tables: &str, env: &[(&str, &str)], args: &[&str]) -> Self {
        Self::start_full(None, top, tables, env, args, None)
    }

    /// Starts on an existing directory (a restart: same data dir), on a fixed port if given.
    pub fn start_in(
        dir: Option<tempfile::TempDir>,
        top: &str,
        tables: &str,
        env: &[(&str, &str)],
        port: Option<u16>,
    ) -> Self {
        Self::start_full(dir, top, tables, env, &[], port)
    }

    /// Kills the process (SIGKILL: no drain) and hands back its directory for a restart.
    pub fn kill_and_take_dir(&mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap())
    }

    fn start_full(
        dir: Option<tempfile::TempDir>,
        top: &str,
        tables: &str,
        env: &[(&str, &str)],
        args: &[&str],
        port: Option<u16>,
    ) -> Self {
        let dir = dir.unwrap_or_else(|| tempfile::tempdir().unwrap());
        let config = dir.path().join("backstop.toml");
        let mut text = config_text(dir.path(), top, tables);
        if let Some(port) = port {
            text = text.replacen(
                "listen = \"127.0.0.1:0\"",
                &format!("listen = \"127.0.0.1:{port}\""),
                1,
            );
        }
        std::fs::write(&config, text).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_backstop"));
        cmd.arg("serve").arg("--config").arg(&config).args(args);
        cmd.env_remove("BACKSTOP_ADMIN_TOKEN")
            .env_remove("BACKSTOP_CONFIG")
            .env_remove("RUST_LOG");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn backstop");

        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = stderr.clone();
        let mut err_pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err_pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });

        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut addr = None;
        let mut admin_addr = None;
        while addr.is_none()
            || (admin_addr.is_none() && env.iter().any(|(k, _)| *k == "BACKSTOP_ADMIN_TOKEN"))
        {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match rx.recv_timeout(left) {
                Ok(line) => line,
                Err(_) => panic!(
                    "backstop did not report its address; stderr:\n{}",
                    stderr.lock().unwrap()
                ),
            };
            if let Some(a) = line.strip_prefix("backstop: listening on http://") {
                addr = Some(a.parse().unwrap());
            } else if let Some(a) = line.strip_prefix("backstop: admin API on http://") {
                admin_addr = Some(a.parse().unwrap());
            }
        }
        Backstop {
            child,
            addr: addr.unwrap(),
            admin_addr,
            dir,
            stderr,
        }
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap()
    }

    /// Sends a signal by name (`TERM`, `INT`, `KILL`) with kill(1).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits for the process to exit, at most `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn connect(&self) -> Conn {
        Conn::open(self.addr)
    }

    /// Waits (at most 5 s: the writer flushes off the request path) until the audit log holds a
    /// record for which `wanted` is true; returns every record read.
    pub fn wait_for_audit(
        &self,
        wanted: impl Fn(&serde_json::Value) -> bool,
    ) -> Vec<serde_json::Value> {
        let path = self
            .dir
            .path()
            .join("data")
            .join("audit")
            .join("audit.jsonl");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let records: Vec<serde_json::Value> = std::fs::read_to_string(&path)
                .unwrap_or_default()
                .lines()
                .map(|l| serde_json::from_str(l).expect("every audit line is JSON"))
                .collect();
            if records.iter().any(&wanted) {
                return records;
            }
            assert!(
                Instant::now() < deadline,
                "no such audit record in {records:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Backstop {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One client connection speaking raw HTTP/1.1.
pub struct Conn {
    pub stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Conn {
    pub fn open(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        Conn { stream, reader }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// Sends a GET and reads the reply, keeping the connection open.
    pub fn get(&mut self, path: &str) -> Reply {
        self.send(format!("GET {path} HTTP/1.1\r\nhost: test\r\n\r\n").as_bytes());
        self.read_reply().expect("a reply")
    }

    /// Reads one response (Content-Length framed); `None` if the server closed first.
    pub fn read_reply(&mut self) -> Option<Reply> {
        let mut status_line = String::new();
        match self.reader.read_line(&mut status_line) {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
        let status: u16 = status_line.split(' ').nth(1)?.parse().ok()?;
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).ok()?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (k, v) = line.split_once(':')?;
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
        let len: usize = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .map_or(0, |(_, v)| v.parse().unwrap());
        let mut body = vec![0; len];
        self.reader.read_exact(&mut body).ok()?;
        Some(Reply {
            status,
            headers,
            body,
        })
    }

    /// Waits until the server closes the connection; returns how long that took, or `None` if
    /// it was still open after `timeout`.
    pub fn wait_closed(&mut self, timeout: Duration) -> Option<Duration> {
        let start = Instant::now();
        self.stream.set_read_timeout(Some(timeout)).unwrap();
        let mut buf = [0u8; 1024];
        loop {
            match self.reader.read(&mut buf) {
                Ok(0) => return Some(start.elapsed()),
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    return Some(start.elapsed());
                }
                Err(_) => return None,
            }
        }
    }
}

/// One request on a fresh connection.
pub fn get(addr: SocketAddr, path: &str) -> Reply {
    Conn::open(addr).get(path)
}

/// Runs the binary with `args` to completion, returning (exit code, stdout, stderr).
pub fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_backstop"));
    cmd.args(args)
        .env_remove("BACKSTOP_ADMIN_TOKEN")
        .env_remove("BACKSTOP_CONFIG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub fn temp_file(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

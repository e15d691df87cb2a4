//! Hostile receivers: a table of endpoints that misbehave in every way the
//! probes found (errors, silence, trickles, floods, resets, garbage, bad
//! TLS, redirects, an answer just inside the timeout). Each case's recorded
//! outcome is asserted; a healthy endpoint beside them gets every message
//! while they hold their connections; and the server's memory stays
//! bounded while it reads gigabyte and endless answers (measured on the
//! real binary, whose resident memory is its own).
//!
//! Time is the server's manual clock: a timeout is a clock advance, not a
//! wait, and the receiver that answers after 29 s waits on the same clock.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use hookline::clock::{Clock, ManualClock};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::common::{PATIENCE, Receiver, Reply, TOKEN, TestServer, eventually, join_all, spawn_hookline};

/// How a raw receiver treats each connection.
#[derive(Clone, Copy, Debug)]
enum Misbehaviour {
    /// Read the request, then say nothing, ever.
    Hang,
    /// The status line and headers, one byte a second.
    HeadersByteBySecond,
    /// 200 and headers at once, then the body one byte a second.
    SlowBody,
    /// 200 with a 1 GiB body, sent as fast as it is read.
    GigabyteBody,
    /// 200 with a chunked body that never ends.
    EndlessChunked,
    /// Read the request, then reset the connection.
    Reset,
    /// Read the request, then close without a word.
    CloseSilently,
    /// Answer with something that is not HTTP.
    Garbage,
    /// 200 with 1 MiB of headers.
    MegabyteOfHeaders,
    /// TLS with a self-signed certificate (then 200, for a client that
    /// would accept it).
    SelfSignedTls,
    /// 200 once the manual clock is 29 s past the request.
    AnswerAfter29s,
}

/// Read one request: its head and a body of `content-length` bytes.
async fn read_request(s: &mut (impl AsyncReadExt + Unpin)) -> Option<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            while buf.len() < end + 4 + length {
                let n = s.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Some(());
        }
    }
}

fn tls_acceptor() -> tokio_rustls::TlsAcceptor {
    use tokio_rustls::rustls;
    let cert =
        rustls::pki_types::CertificateDer::from(include_bytes!("../data/self-signed-cert.der").to_vec());
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(
        include_bytes!("../data/self-signed-key.der").to_vec().into(),
    );
    let config =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// Serve `how` on a fresh loopback port; returns the endpoint URL.
async fn misbehave(how: Misbehaviour, clock: Option<ManualClock>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let clock = clock.clone();
            tokio::spawn(async move { connection(how, socket, clock).await });
        }
    });
    let scheme = if matches!(how, Misbehaviour::SelfSignedTls) { "https" } else { "http" };
    format!("{scheme}://{addr}/hook")
}

async fn connection(how: Misbehaviour, mut s: TcpStream, clock: Option<ManualClock>) {
    use Misbehaviour::*;
    if matches!(how, SelfSignedTls) {
        // The client refuses the certificate; nothing more happens.
        if let Ok(mut tls) = tls_acceptor().accept(s).await
            && read_request(&mut tls).await.is_some()
        {
            let _ = tls.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await;
        }
        return;
    }
    if read_request(&mut s).await.is_none() {
        return;
    }
    match how {
        Hang => std::future::pending().await,
        HeadersByteBySecond => {
            for b in b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n" {
                if s.write_all(&[*b]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        SlowBody => {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n").await;
            for _ in 0..1000 {
                if s.write_all(b"x").await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        GigabyteBody => {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 1073741824\r\n\r\n").await;
            let block = vec![b'a'; 64 * 1024];
            for _ in 0..(1 << 14) {
                if s.write_all(&block).await.is_err() {
                    return;
                }
            }
        }
        EndlessChunked => {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").await;
            let chunk = format!("4000\r\n{}\r\n", "b".repeat(0x4000));
            while s.write_all(chunk.as_bytes()).await.is_ok() {}
        }
        Reset => {
            let _ = s.set_zero_linger();
            drop(s);
            return;
        }
        CloseSilently => {
            let _ = s.shutdown().await;
        }
        Garbage => {
            let _ = s.write_all(b"SSH-2.0-OpenSSH_9.2\r\n\x00\x01\x02 not http at all\r\n\r\n").await;
        }
        MegabyteOfHeaders => {
            let mut head = String::from("HTTP/1.1 200 OK\r\n");
            for i in 0..16_384 {
                head.push_str(&format!("x-pad-{i:05}: {}\r\n", "p".repeat(48)));
            }
            head.push_str("content-length: 0\r\n\r\n");
            let _ = s.write_all(head.as_bytes()).await;
        }
        AnswerAfter29s => {
            let clock = clock.expect("needs the server's clock");
            clock.sleep_until(clock.now().plus(Duration::from_secs(29))).await;
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
        }
        SelfSignedTls => unreachable!(),
    }
    // Keep the connection open until the client gives up.
    let _ = s.read(&mut [0u8; 1]).await;
}

/// What an attempt should have recorded.
struct Expect {
    code: u64,
    status: &'static str,
    /// A fragment of the error text (attempts without a response), or of
    /// nothing.
    error: Option<&'static str>,
    /// The stored response body's length, when it matters.
    body_len: Option<usize>,
}

const fn answered(code: u64, status: &'static str) -> Expect {
    Expect { code, status, error: None, body_len: None }
}

const fn no_answer(error: &'static str) -> Expect {
    Expect { code: 0, status: "fail", error: Some(error), body_len: None }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hostile_receiver_is_recorded_as_what_it_did_and_harms_nobody() {
    use Misbehaviour::*;
    let t = TestServer::with_manual_clock().await;
    let clock = t.clock().clone();
    let live = Receiver::start(Reply::Status(200, "")).await;
    let http_500 = Receiver::start(Reply::Status(500, "boom")).await;
    let redirect_to_live: &'static str = Box::leak(live.url.clone().into_boxed_str());
    let redirector =
        Receiver::start(Reply::Headers(302, Box::leak(Box::new([("location", redirect_to_live)])))).await;

    let mut cases: Vec<(&str, String, Expect)> = vec![
        ("500", http_500.url.clone(), answered(500, "fail")),
        ("redirect to a live receiver", redirector.url.clone(), answered(302, "fail")),
    ];
    let raw = [
        ("hang", Hang, no_answer("timed out")),
        ("headers one byte a second", HeadersByteBySecond, no_answer("timed out")),
        ("slow body", SlowBody, answered(200, "success")),
        ("1 GiB body", GigabyteBody, Expect { body_len: Some(64 * 1024), ..answered(200, "success") }),
        (
            "endless chunked body",
            EndlessChunked,
            Expect { body_len: Some(64 * 1024), ..answered(200, "success") },
        ),
        ("reset", Reset, no_answer("")),
        ("close without answer", CloseSilently, no_answer("")),
        ("non-HTTP garbage", Garbage, no_answer("")),
        ("1 MiB of headers", MegabyteOfHeaders, no_answer("")),
        ("self-signed TLS", SelfSignedTls, no_answer("certificate")),
        ("200 after 29 s", AnswerAfter29s, answered(200, "success")),
    ];
    for (name, how, expect) in raw {
        cases.push((name, misbehave(how, Some(clock.clone())).await, expect));
    }

    let (status, app) = t.post("/api/v1/app", json!({"name": "hostile"})).await;
    assert_eq!(status, 201);
    let app = app["id"].as_str().unwrap().to_owned();
    let mut endpoints = HashMap::new();
    for (name, url, _) in &cases {
        let body = json!({"url": url, "retryPolicy": {"schedule": [], "timeout": 30}});
        let (status, ep) = t.post(&format!("/api/v1/app/{app}/endpoint"), body).await;
        assert_eq!(status, 201, "{name}: {ep}");
        endpoints.insert(ep["id"].as_str().unwrap().to_owned(), *name);
    }
    let (healthy_app, _) = t.app_with_endpoint(&live.url, json!({})).await;
    let msg = t.send(&app, json!({"hostile": true})).await;

    // Those that answer or fail at once are recorded at once.
    let slow = ["hang", "headers one byte a second", "slow body", "200 after 29 s"];
    let recorded = |attempts: &[Value], name: &str| {
        attempts.iter().any(|a| endpoints.get(a["endpointId"].as_str().unwrap()) == Some(&name))
    };
    eventually("the quick cases to be recorded", || async {
        let attempts = t.attempts(&app, &msg).await;
        cases.iter().filter(|(n, ..)| !slow.contains(n)).all(|(n, ..)| recorded(&attempts, n)).then_some(())
    })
    .await;

    // While four connections are held open, the healthy endpoint gets
    // everything sent to it.
    let healthy: Vec<String> = join_all((0..50).map(|i| t.send(&healthy_app, json!({"i": i})))).await;
    live.wait_for(healthy.len()).await;
    let arrived: std::collections::HashSet<String> =
        live.received().iter().map(|r| r.header("webhook-id").to_owned()).collect();
    assert!(healthy.iter().all(|id| arrived.contains(id)), "the healthy endpoint missed messages");
    assert!(!arrived.contains(&msg), "the redirect was followed to the live receiver");

    // 29 s: the late answer arrives inside its timeout.
    clock.advance(Duration::from_secs(29));
    eventually("the answer after 29 s to be recorded", || async {
        recorded(&t.attempts(&app, &msg).await, "200 after 29 s").then_some(())
    })
    .await;
    // Past 30 s: the rest time out (or, with their status in, stop reading).
    clock.advance(Duration::from_secs(2));
    let attempts = eventually("every case to be recorded", || async {
        let attempts = t.attempts(&app, &msg).await;
        (attempts.len() >= cases.len()).then_some(attempts)
    })
    .await;

    let mut failures = Vec::new();
    for (name, _, expect) in &cases {
        let a = attempts
            .iter()
            .find(|a| endpoints.get(a["endpointId"].as_str().unwrap()) == Some(name))
            .unwrap_or_else(|| panic!("{name}: no attempt recorded"));
        let error = a["error"].as_str().unwrap_or_default();
        let ok = a["responseStatusCode"] == expect.code
            && a["statusText"] == expect.status
            && expect.error.is_none_or(|e| !error.is_empty() && error.contains(e))
            && expect.body_len.is_none_or(|n| a["response"].as_str().unwrap().len() == n);
        if !ok {
            failures.push(format!("{name}: {a}"));
        }
    }
    assert!(failures.is_empty(), "unexpected outcomes:\n{}", failures.join("\n"));
    eprintln!("hostile receivers: {} cases recorded as expected; healthy endpoint got 50 of 50", cases.len());
}

/// Resident memory of a process, in KiB: now and at its peak.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Peak resident memory of the real binary while it reads the floods
/// (gigabyte and endless bodies, a megabyte of headers), each several
/// times, beside a trickle: bounded by what it keeps (64 KiB an answer),
/// not by what it is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_cost_bounded_memory() {
    use Misbehaviour::*;
    let dir = tempfile::tempdir().unwrap();
    let (mut server, url) = spawn_hookline(&["--data-dir".as_ref(), dir.path().as_os_str()]).await;
    let pid = server.id().unwrap();
    let http = reqwest::Client::new();
    let post = |path: String, body: Value| {
        let http = http.clone();
        let url = format!("{url}{path}");
        async move {
            let resp = http.post(url).bearer_auth(TOKEN).json(&body).send().await.unwrap();
            assert!(resp.status().is_success(), "{}", resp.status());
            resp.json::<Value>().await.unwrap()
        }
    };
    let app = post("/api/v1/app".into(), json!({"name": "floods"})).await["id"].as_str().unwrap().to_owned();
    for how in [GigabyteBody, EndlessChunked, MegabyteOfHeaders, SlowBody] {
        let target = misbehave(how, None).await;
        let policy = json!({"schedule": [], "timeout": 2});
        post(format!("/api/v1/app/{app}/endpoint"), json!({"url": target, "retryPolicy": policy})).await;
    }
    let (before, _) = memory_kib(pid);
    const MESSAGES: usize = 5;
    let mut ids = Vec::new();
    for i in 0..MESSAGES {
        let msg =
            post(format!("/api/v1/app/{app}/msg"), json!({"eventType": "flood", "payload": {"i": i}})).await;
        ids.push(msg["id"].as_str().unwrap().to_owned());
    }
    let deadline = tokio::time::Instant::now() + PATIENCE;
    for id in &ids {
        loop {
            let list: Value = http
                .get(format!("{url}/api/v1/app/{app}/attempt/msg/{id}?with_content=false"))
                .bearer_auth(TOKEN)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if list["data"].as_array().unwrap().len() == 4 {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "attempts of {id} not all recorded");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let (after, peak) = memory_kib(pid);
    server.kill().await.unwrap();
    eprintln!(
        "floods: {} attempts at 1 GiB, endless, 1 MiB-header and trickling receivers; resident {} MiB before, \
         {} MiB after, peak {} MiB",
        MESSAGES * 4,
        before / 1024,
        after / 1024,
        peak / 1024
    );
    assert!(peak < 100 * 1024, "peak resident memory {} MiB", peak / 1024);
}

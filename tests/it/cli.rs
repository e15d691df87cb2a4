//! The command-line clients: `hookline listen` receives a webhook from a
//! running server and prints it as verified; `hookline send` posts a
//! message.

use std::process::Stdio;

use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use crate::common::{PATIENCE, Receiver, Reply, TOKEN, TestServer};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn hookline(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hookline"));
    cmd.args(args)
        .env("HOOKLINE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    cmd
}

/// Read stdout lines until one contains `needle`; returns everything read.
async fn read_until(lines: &mut Lines<BufReader<ChildStdout>>, needle: &str) -> String {
    let mut seen = String::new();
    let found = tokio::time::timeout(PATIENCE, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            seen.push_str(&line);
            seen.push('\n');
            if line.contains(needle) {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(found, Ok(true), "never printed {needle:?}; printed:\n{seen}");
    seen
}

/// `hookline send` against `server` for `app`, with more arguments.
fn send(server: &str, app: &str, more: &[&str]) -> Command {
    let mut cmd = hookline(&["send", "--server", server, "--token", TOKEN, "--app", app]);
    cmd.args(more);
    cmd
}

async fn start_listen(secret: &str) -> (Child, Lines<BufReader<ChildStdout>>, String) {
    let mut child = hookline(&["listen", "--listen", "127.0.0.1:0", "--secret", secret]).spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let banner = read_until(&mut lines, "Listening for webhooks on").await;
    let url = banner.split("on ").nth(1).unwrap().split_whitespace().next().unwrap().to_owned();
    (child, lines, url)
}

#[tokio::test]
async fn listen_prints_a_verified_webhook_from_a_running_server() {
    let t = TestServer::start().await;
    let (_listen, mut lines, url) = start_listen(SECRET).await;
    let (app, _) = t.app_with_endpoint(&format!("{url}/webhooks"), json!({"secret": SECRET})).await;
    let msg = t.send(&app, json!({"hello": "listener"})).await;
    let printed = read_until(&mut lines, &msg).await;
    let line = printed.lines().find(|l| l.contains(&msg)).unwrap();
    assert!(line.contains("signature verified"), "{line}");
    assert!(line.contains("POST /webhooks"), "{line}");
    let body = read_until(&mut lines, "listener").await;
    assert!(body.contains("\"hello\""), "{body}");
}

#[tokio::test]
async fn listen_flags_a_wrong_secret() {
    let t = TestServer::start().await;
    let other = "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let (_listen, mut lines, url) = start_listen(other).await;
    let (app, _) = t.app_with_endpoint(&url, json!({"secret": SECRET})).await;
    let msg = t.send(&app, json!({})).await;
    let printed = read_until(&mut lines, &msg).await;
    assert!(printed.lines().any(|l| l.contains(&msg) && l.contains("signature INVALID")), "{printed}");
}

#[tokio::test]
async fn send_posts_a_message_that_gets_delivered() {
    let t = TestServer::start().await;
    let rx = Receiver::start(Reply::Status(200, "")).await;
    let (app, _) = t.app_with_endpoint(&rx.url, json!({})).await;
    let url = t.server.url();
    let output =
        send(&url, &app, &["--event-type", "cli.sent", "--payload", r#"{"from": "the command line"}"#])
            .output()
            .await
            .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let id = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    assert!(id.starts_with("msg_"), "{id}");
    let got = rx.wait_for(1).await;
    assert_eq!(got[0].header("webhook-id"), id);

    // An ordering key is sent along (and kept with the message).
    let keyed =
        send(&url, &app, &["--event-type", "cli.sent", "--ordering-key", "order-7"]).output().await.unwrap();
    assert!(keyed.status.success(), "{}", String::from_utf8_lossy(&keyed.stderr));
    let keyed = String::from_utf8(keyed.stdout).unwrap().trim().to_owned();
    assert_eq!(t.get(&format!("/api/v1/app/{app}/msg/{keyed}")).await["orderingKey"], "order-7");

    // Errors come back as a failure with Svix's message.
    let bad = send(&url, "nope", &["--event-type", "x"]).stderr(Stdio::piped()).output().await.unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("404"));
}

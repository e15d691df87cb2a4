//! The dashboard in a real headless Chromium, against a running server and
//! a real receiver: an operator's whole workflow end to end.

use std::time::Duration;

use serde_json::json;

use crate::browser::Browser;
use crate::common::{Receiver, Reply, TOKEN, TestServer};

async fn sign_in(b: &Browser, base: &str) {
    b.goto(&format!("{base}/apps")).await;
    assert_eq!(b.path().await, "/login", "signed-out visitors are sent to the sign-in page");
    b.screenshot("login").await;
    b.fill("#token", TOKEN).await;
    b.click("button[type=submit]").await;
    b.wait_for_text("Applications").await;
}

/// An operator's workflow, click by click: sign in; create an endpoint; a
/// failing endpoint's attempt with its code and next retry; Retry after the
/// receiver recovers shows the new attempt without a reload; replay a
/// succeeded message; disable and no attempt follows; a portal link cannot
/// reach another application.
#[tokio::test]
async fn an_operators_workflow_in_a_browser() {
    let t = TestServer::start().await;
    let base = t.server.url();
    let rx = Receiver::start(Reply::Status(500, "upstream exploded")).await;
    let (status, acme) = t.post("/api/v1/app", json!({"name": "Acme", "uid": "acme"})).await;
    assert_eq!(status, 201);
    let acme = acme["id"].as_str().unwrap().to_owned();
    let (_, other) = t.post("/api/v1/app", json!({"name": "Globex"})).await;
    let other = other["id"].as_str().unwrap().to_owned();

    let b = Browser::start().await;
    sign_in(&b, &base).await;
    let text = b.text().await;
    assert!(text.contains("Acme") && text.contains("Globex"));
    b.screenshot("apps").await;

    // Create an endpoint from the application page, with the "fixed" preset
    // (`RetryPolicy::fixed_two_minutes`).
    b.click(&format!("a[href='/apps/{acme}']")).await;
    b.wait_for_text("No endpoints yet").await;
    b.fill("#url", &rx.url).await;
    b.fill("#description", "Orders service").await;
    b.find("#preset").await.select_by_value("fixed").await.unwrap();
    b.click("form[action$='/endpoints'] button[type=submit]").await;
    b.wait_for_text("Endpoint created.").await;
    let endpoint_path = b.path().await;
    let ep = endpoint_path.rsplit('/').next().unwrap().to_owned();
    assert!(ep.starts_with("ep_"), "{endpoint_path}");
    assert_eq!(b.find("#schedule").await.prop("value").await.unwrap().as_deref(), Some("2m, 2m, 2m"));
    b.screenshot("endpoint").await;

    // A message to the failing endpoint: its attempt, code and next retry.
    let msg1 = t.send(&acme, json!({"order": 1001, "total": "42.00"})).await;
    rx.wait_for(1).await;
    b.goto(&format!("{base}{endpoint_path}/messages")).await;
    let row = b.wait_for_in("#live tbody", "500").await;
    assert!(row.contains("in 2 min") || row.contains("in 1 min"), "next retry shown: {row}");
    b.screenshot("endpoint-messages").await;
    b.click("#live tbody a").await;
    b.wait_for_text("Attempts (1)").await;
    let text = b.text().await;
    assert!(text.contains("500") && text.contains("scheduled"), "{text}");
    assert!(text.contains("\"order\": 1001"), "payload pretty-printed: {text}");
    let endpoints = b.wait_for_in("#live table", "pending").await;
    assert!(endpoints.contains("in 2 min") || endpoints.contains("in 1 min"), "{endpoints}");
    b.screenshot("message-failed").await;

    // The receiver recovers; Retry adds a successful manual attempt in place.
    rx.set_default(Reply::Status(200, "thanks"));
    b.mark().await;
    b.click("form[action$='/retry'] button").await;
    b.wait_for_text("Attempts (2)").await;
    let text = b.wait_for_in("#live", "manual").await;
    assert!(text.contains("200"), "{text}");
    assert!(b.still_marked().await, "the new attempt appeared without a reload");
    b.wait_for_in("#live table", "success").await;
    b.screenshot("message").await;

    // Replay the (now succeeded) message.
    b.click("form[action$='/replay'] button[type=submit]").await;
    b.wait_for_text("Attempts (3)").await;
    assert!(b.still_marked().await);
    assert_eq!(rx.count(), 3);
    let attempts = t.attempts(&acme, &msg1).await;
    assert_eq!(
        attempts.iter().filter(|a| a["triggerType"] == 1).count(),
        2,
        "Retry and Replay are manual attempts"
    );

    // Phone width stays readable.
    b.client.set_window_size(390, 844).await.unwrap();
    b.screenshot("message-phone").await;
    b.client.set_window_size(1280, 900).await.unwrap();

    // A failing message with a retry pending, then disable: nothing follows.
    rx.set_default(Reply::Status(503, ""));
    let msg2 = t.send(&acme, json!({"order": 1002})).await;
    rx.wait_for(4).await;
    b.goto(&format!("{base}{endpoint_path}")).await;
    b.click("form[action$='/toggle'] button").await;
    b.client.accept_alert().await.unwrap();
    b.wait_for_text("Endpoint disabled").await;
    assert!(b.text().await.contains("disabled"));
    let msg3 = t.send(&acme, json!({"order": 1003})).await;
    b.goto(&format!("{base}/apps/{acme}/messages/{msg2}")).await;
    let row = b.wait_for_in("#live table", "fail").await;
    assert!(row.contains("endpoint disabled") && !row.contains("in 2 min"), "no retry left: {row}");
    b.goto(&format!("{base}/apps/{acme}/messages/{msg3}")).await;
    b.wait_for_text("Sent to no endpoint").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rx.count(), 4, "no attempt after the endpoint was disabled");

    // The application's message log.
    b.goto(&format!("{base}/apps/{acme}/messages")).await;
    b.wait_for_text("Message log").await;
    b.screenshot("message-log").await;
    b.goto(&format!("{base}/apps/{acme}")).await;
    b.wait_for_text("Orders service").await;
    b.screenshot("app").await;

    // Sign out, then open a customer portal link for Acme.
    b.click("header form button").await;
    b.wait_for_text("Sign in to Hookline").await;
    b.goto(&format!("{base}/apps")).await;
    assert_eq!(b.path().await, "/login", "signed out");
    let (_, portal) = t.post(&format!("/api/v1/auth/app-portal-access/{acme}"), json!({})).await;
    let portal_url = portal["url"].as_str().unwrap();
    b.goto(portal_url).await;
    b.wait_for_text("Orders service").await;
    assert_eq!(b.path().await, format!("/apps/{acme}"));
    assert!(b.text().await.contains("Application portal"));
    b.screenshot("portal").await;
    b.goto(&format!("{base}/apps/{other}")).await;
    b.wait_for_text("Application not found").await;
    b.goto(&format!("{base}/apps")).await;
    assert_eq!(b.path().await, format!("/apps/{acme}"), "the portal cannot list other applications");
    assert!(!b.text().await.contains("Globex"));
}

/// Forms refuse posts without the session's CSRF token or from elsewhere.
#[tokio::test]
async fn forms_need_the_session_and_its_csrf_token() {
    let t = TestServer::start().await;
    let (_, app) = t.post("/api/v1/app", json!({"name": "Acme"})).await;
    let app = app["id"].as_str().unwrap().to_owned();
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let base = t.server.url();

    let login =
        http.post(format!("{base}/login")).form(&[("token", TOKEN), ("next", "/apps")]).send().await.unwrap();
    assert_eq!(login.status(), 303);
    let cookie = login.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    let session = cookie.split(';').next().unwrap().to_owned();
    assert!(!session.contains(TOKEN), "the API token is not put in the cookie");

    let page = http.get(format!("{base}/apps/{app}")).header("cookie", &session).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    let csrf = html.split("name=\"_csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();

    let create = |csrf: &str, origin: &str| {
        http.post(format!("{base}/apps/{app}/endpoints"))
            .header("cookie", &session)
            .header("origin", origin)
            .form(&[("_csrf", csrf), ("url", "https://example.com/hook")])
            .send()
    };
    assert_eq!(create("wrong", &base).await.unwrap().status(), 403);
    assert_eq!(create(&csrf, "http://evil.example").await.unwrap().status(), 403);
    assert_eq!(create(&csrf, &base).await.unwrap().status(), 303);
    assert_eq!(t.get(&format!("/api/v1/app/{app}/endpoint")).await["data"].as_array().unwrap().len(), 1);

    // No session: pages send you to sign in, posts are refused.
    let anon = http.get(format!("{base}/apps/{app}")).send().await.unwrap();
    assert_eq!(anon.status(), 303);
    assert!(anon.headers()["location"].to_str().unwrap().starts_with("/login?next="));
    let wrong = http.post(format!("{base}/login")).form(&[("token", "hl_nope")]).send().await.unwrap();
    assert_eq!(wrong.status(), 401);
}

/// A signed-in dashboard user without a browser: forms posted as browsers do.
pub(crate) struct Dashboard {
    http: reqwest::Client,
    base: String,
    cookie: String,
}

impl Dashboard {
    pub(crate) async fn sign_in(t: &TestServer) -> Dashboard {
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        let base = t.server.url();
        let login = http.post(format!("{base}/login")).form(&[("token", TOKEN)]).send().await.unwrap();
        let cookie = login.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
        Dashboard { http, base, cookie }
    }

    pub(crate) async fn page(&self, path: &str) -> String {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        resp.text().await.unwrap()
    }

    /// Post a form found on `page` (its CSRF token included); returns the
    /// status and the page redirected to, or the body.
    pub(crate) async fn post(&self, page: &str, action: &str, fields: &[(&str, &str)]) -> (u16, String) {
        let html = self.page(page).await;
        let csrf =
            html.split("name=\"_csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
        let mut form: Vec<(&str, &str)> = vec![("_csrf", &csrf)];
        form.extend_from_slice(fields);
        let resp = self
            .http
            .post(format!("{}{action}", self.base))
            .header("cookie", &self.cookie)
            .header("origin", &self.base)
            .form(&form)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        match resp.headers().get("location") {
            Some(to) => {
                let to = to.to_str().unwrap().to_owned();
                (status, self.page(&to).await)
            }
            None => (status, resp.text().await.unwrap()),
        }
    }
}

#[tokio::test]
async fn endpoint_forms_change_settings_policy_headers_and_secret() {
    let t = TestServer::start().await;
    let rx = Receiver::start(Reply::Status(200, "")).await;
    let (app, ep) = t.app_with_endpoint(&rx.url, json!({})).await;
    let d = Dashboard::sign_in(&t).await;
    let page = format!("/apps/{app}/endpoints/{ep}");

    let (_, html) = d
        .post(
            &page,
            &format!("{page}/policy"),
            &[("schedule", "2m, 2m, 2m"), ("success", "200"), ("timeout", "15")],
        )
        .await;
    assert!(html.contains("Retry policy saved."), "{html}");
    let shown = t.get(&format!("/api/v1/app/{app}/endpoint/{ep}")).await;
    assert_eq!(shown["retryPolicy"], json!({"schedule": [120, 120, 120], "success": "200", "timeout": 15}));
    let (_, html) = d.post(&page, &format!("{page}/policy"), &[("schedule", "5 minutes")]).await;
    assert!(html.contains("Retry policy:"), "a bad schedule is explained: {html}");
    let (_, html) = d.post(&page, &format!("{page}/policy"), &[("reset", "1")]).await;
    assert!(html.contains("Using the server default"));

    let (_, html) =
        d.post(&page, &format!("{page}/headers"), &[("headers", "X-Tenant: 42\nX-Env: test")]).await;
    assert!(html.contains("Headers saved."));
    t.send(&app, json!({})).await;
    let got = rx.wait_for(1).await;
    assert_eq!((got[0].header("x-tenant"), got[0].header("x-env")), ("42", "test"));

    let settings = [("url", rx.url.as_str()), ("description", "Billing"), ("event_types", "a.b, c.d")];
    let (_, html) = d.post(&page, &format!("{page}/settings"), &settings).await;
    assert!(
        html.contains("event types don&#39;t exist: a.b, c.d")
            || html.contains("event types don't exist: a.b, c.d"),
        "{html}"
    );
    t.event_types(&["a.b", "c.d"]).await;
    let (_, html) = d.post(&page, &format!("{page}/settings"), &settings).await;
    assert!(html.contains("Settings saved."));
    let shown = t.get(&format!("/api/v1/app/{app}/endpoint/{ep}")).await;
    assert_eq!(
        (shown["description"].as_str(), shown["eventTypes"].clone()),
        (Some("Billing"), json!(["a.b", "c.d"]))
    );

    let before = t.get(&format!("/api/v1/app/{app}/endpoint/{ep}/secret")).await["key"].clone();
    let (_, html) = d.post(&page, &format!("{page}/rotate"), &[]).await;
    assert!(html.contains("Secret rotated"));
    assert_ne!(t.get(&format!("/api/v1/app/{app}/endpoint/{ep}/secret")).await["key"], before);
}

#[tokio::test]
async fn bulk_replay_of_failed_messages_counts_before_sending() {
    let t = TestServer::start().await;
    let rx = Receiver::start(Reply::Status(500, "")).await;
    let (app, ep) = t.app_with_endpoint(&rx.url, json!({"retryPolicy": {"schedule": []}})).await;
    for i in 0..3 {
        let m = t.send(&app, json!({"i": i})).await;
        t.wait_status(&app, &m, &ep, "fail").await;
    }
    rx.set_default(Reply::Status(200, ""));
    let d = Dashboard::sign_in(&t).await;
    let page = format!("/apps/{app}/endpoints/{ep}");
    let since = (chrono::Utc::now() - chrono::Duration::hours(1)).format("%Y-%m-%dT%H:%M").to_string();
    let (status, preview) =
        d.post(&page, &format!("{page}/replay"), &[("step", "preview"), ("since", &since)]).await;
    assert_eq!(status, 200);
    assert!(preview.contains("<b>3</b> failed messages"), "{preview}");
    assert!(preview.contains("Send 3 again"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rx.count(), 3, "the count sends nothing");

    let (_, after) =
        d.post(&page, &format!("{page}/replay"), &[("step", "confirm"), ("since", &since)]).await;
    assert!(after.contains("3 failed messages are being sent again."), "{after}");
    rx.wait_for(6).await;
    crate::common::eventually("all delivered", || async {
        let s = t.get(&format!("/api/v1/app/{app}/endpoint/{ep}/stats")).await;
        (s["success"] == 3).then_some(())
    })
    .await;
}

/// The charts after forty minutes of successes, failures and a timeout
/// (on the manual clock): the endpoint chart's totals are the API's, the
/// application page charts every endpoint's success rate. Writes the
/// screenshots README shows.
#[tokio::test]
async fn charts_show_the_attempts_the_api_lists() {
    let t = TestServer::with_manual_clock().await;
    t.event_types(&["test.event", "audit.event"]).await;
    let rx = Receiver::start(Reply::Status(200, "ok")).await;
    let once = json!({"retryPolicy": {"schedule": [], "timeout": 1}, "eventTypes": ["test.event"]});
    let (app, ep) = t.app_with_endpoint(&rx.url, once).await;
    let audit = json!({"url": format!("{}/audit", rx.url), "eventTypes": ["audit.event"], "retryPolicy": {"schedule": []}});
    let (status, body) = t.post(&format!("/api/v1/app/{app}/endpoint"), audit).await;
    assert_eq!(status, 201, "{body}");

    // One attempt per message (no retries), one message at a time, so each
    // gets the reply scripted for it; the clock moves a minute in between.
    let mut received = 0;
    let mut sent = Vec::new();
    // A 503 or a timeout slows the whole endpoint down (issue 17: to one
    // start a second or less, then back up one per second per success):
    // from the first, messages go at least a second apart.
    let mut congested = false;
    for minute in 0..40u64 {
        // Every attempt of the minute is recorded before the clock moves on
        // (a moving clock would time out one still in flight).
        let mut this_minute: Vec<String> = Vec::new();
        // Seconds the clock moved within the minute: the minute still ends
        // 60 s after it began, so each minute's attempts share one bucket.
        let mut spent = 0;
        for n in 0..1 + minute % 3 {
            if congested {
                // (Once what is in flight is recorded: a moving clock would
                // time it out.)
                for msg in &this_minute {
                    t.wait_attempts(&app, msg, 1).await;
                }
                t.clock().advance(Duration::from_secs(1));
                spent += 1;
            }
            let reply = match (minute * 3 + n) % 13 {
                _ if minute == 23 && n == 0 => Reply::Hang,
                4 | 9 => Reply::Status(500, "upstream exploded"),
                7 => Reply::Status(503, "busy"),
                k => Reply::Slow(Duration::from_millis(5 + 12 * k)),
            };
            let hang = matches!(reply, Reply::Hang);
            congested |= hang || matches!(reply, Reply::Status(503, _));
            rx.script([reply]);
            let msg = t.send(&app, json!({"minute": minute, "n": n})).await;
            received += 1;
            rx.wait_for(received).await;
            if hang {
                t.clock().advance(Duration::from_secs(2)); // past the 1 s timeout
                spent += 2;
            }
            sent.push(msg.clone());
            this_minute.push(msg);
        }
        if (5..35).contains(&minute) && minute % 2 == 1 {
            let reply =
                if (12..18).contains(&minute) { Reply::Status(502, "") } else { Reply::Status(200, "") };
            rx.script([reply]);
            let (status, msg) = t
                .post(&format!("/api/v1/app/{app}/msg"), json!({"eventType": "audit.event", "payload": {}}))
                .await;
            assert_eq!(status, 202);
            received += 1;
            rx.wait_for(received).await;
            this_minute.push(msg["id"].as_str().unwrap().to_owned());
        }
        for msg in &this_minute {
            t.wait_attempts(&app, msg, 1).await;
        }
        t.clock().advance(Duration::from_secs(60 - spent));
    }

    // What the API says about the endpoint's attempts.
    let listed = crate::common::eventually("every attempt listed", || async {
        let list = t.get(&format!("/api/v1/app/{app}/attempt/endpoint/{ep}?limit=250")).await;
        let data = list["data"].as_array().unwrap().clone();
        (data.len() == sent.len()).then_some(data)
    })
    .await;
    let ok = listed.iter().filter(|a| a["status"] == 0).count();
    let timed_out = listed.iter().filter(|a| a["responseStatusCode"] == 0).count();
    let failed = listed.len() - ok - timed_out;
    assert!(ok > 0 && failed > 0 && timed_out == 1, "a mix: {ok} {failed} {timed_out}");

    let b = Browser::start().await;
    let base = t.server.url();
    sign_in(&b, &base).await;
    b.goto(&format!("{base}/apps/{app}/endpoints/{ep}")).await;
    let chart = b.find("#attempts-chart").await;
    let attr = |name: &'static str| {
        let chart = chart.clone();
        async move { chart.attr(name).await.unwrap().unwrap_or_default() }
    };
    assert_eq!(attr("data-total").await, listed.len().to_string());
    assert_eq!(attr("data-success").await, ok.to_string());
    assert_eq!(attr("data-failure").await, failed.to_string());
    assert_eq!(attr("data-timeout").await, timed_out.to_string());
    let caption = b.find("#attempts-chart figcaption").await.text().await.unwrap();
    assert!(
        caption
            .contains(&format!("{} — {ok} succeeded, {failed} failed, {timed_out} timed out", listed.len())),
        "{caption}"
    );
    // One group of bars per minute that had attempts.
    let groups = b.client.find_all(fantoccini::Locator::Css("#attempts-chart svg > g")).await.unwrap();
    assert_eq!(groups.len(), 40);
    let latency = b.find("#latency-chart figcaption").await.text().await.unwrap();
    assert!(latency.contains("p50") && latency.contains("p95"), "{latency}");
    b.screenshot_of("chart-endpoint", "#live").await;

    // Another window is a link away, and counts the same attempts.
    b.click("nav.windows a[href$='window=day']").await;
    b.wait_for_text("Attempts in the last day").await;
    assert_eq!(
        b.find("#attempts-chart").await.attr("data-total").await.unwrap(),
        Some(listed.len().to_string())
    );

    // The application page: one small chart per endpoint.
    b.goto(&format!("{base}/apps/{app}?window=hour")).await;
    b.wait_for_text("Success rate by endpoint").await;
    let multiples = b.client.find_all(fantoccini::Locator::Css("figure.multiple")).await.unwrap();
    assert_eq!(multiples.len(), 2);
    let text = b.find(".multiples").await.text().await.unwrap();
    let rate = 100.0 * ok as f64 / listed.len() as f64;
    assert!(text.contains(&format!("{rate:.1} % of {} attempts", listed.len())), "{text}");
    assert!(text.contains("80.0 % of 15 attempts"), "the audit endpoint: 3 of 15 failed: {text}");
    b.screenshot_of("chart-app", ".multiples").await;
}

/// Sign-in follows only same-origin paths: every disguised off-site or
/// malformed `next` goes to the default page, never a 5xx.
#[tokio::test]
async fn sign_in_never_redirects_off_site() {
    let t = TestServer::start().await;
    let (_, app) = t.post("/api/v1/app", json!({"name": "Acme"})).await;
    let app = app["id"].as_str().unwrap().to_owned();
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let base = t.server.url();
    let sign_in = |next: String| {
        let http = http.clone();
        let base = base.clone();
        async move {
            let resp = http
                .post(format!("{base}/login"))
                .form(&[("token", TOKEN), ("next", &next)])
                .send()
                .await
                .unwrap();
            let location = resp.headers().get("location").map(|l| l.to_str().unwrap().to_owned());
            (resp.status().as_u16(), location)
        }
    };
    for next in [
        "/\t/evil.example",
        "/\n/evil.example",
        "/\r/evil.example",
        "/\u{b}/evil.example",
        "/\0/evil.example",
        "/\u{1b}/evil.example",
        "/\u{7f}/evil.example",
        "//evil.example",
        "/\\evil.example",
        "https://evil.example",
        "/%09/evil.example",
        "/%2F/evil.example",
        "/ /evil.example",
        "evil.example",
        "",
    ] {
        assert_eq!(sign_in(next.to_owned()).await, (303, Some("/apps".to_owned())), "next = {next:?}");
    }
    let own = format!("/apps/{app}");
    assert_eq!(sign_in(own.clone()).await, (303, Some(own)));
}

/// Every dashboard answer carries the browser protections; the session
/// cookie is `Secure` when the public URL is https.
#[tokio::test]
async fn pages_send_security_headers_and_secure_cookies_over_https() {
    let t =
        TestServer::configured(None, |cfg| cfg.public_url = Some("https://hooks.example.com".into())).await;
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let base = t.server.url();
    for path in ["/login", "/apps", "/assets/app.js"] {
        let resp = http.get(format!("{base}{path}")).send().await.unwrap();
        let h = resp.headers();
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["referrer-policy"], "same-origin", "{path}");
    }
    let login = http.post(format!("{base}/login")).form(&[("token", TOKEN)]).send().await.unwrap();
    let cookie = login.headers()["set-cookie"].to_str().unwrap();
    assert!(cookie.contains("; Secure"), "{cookie}");
    // The pages have no inline script or style for the policy to block.
    let d = Dashboard::sign_in(&t).await;
    let html = d.page("/apps").await;
    assert!(!html.contains("style=\"") && !html.contains("<script>"), "{html}");
}

/// Flash messages come from a fixed set of codes, and form errors are shown
/// in place: neither a link nor a bad input can put text of its choosing on
/// a page or in a `Location` header.
#[tokio::test]
async fn flash_messages_are_codes_and_errors_stay_out_of_locations() {
    let t = TestServer::start().await;
    let (app, _) = t.app_with_endpoint("https://example.com/hook", json!({})).await;
    let d = Dashboard::sign_in(&t).await;
    let forged = d.page(&format!("/apps/{app}?notice=Your+account+is+locked&error=Call+555-0100")).await;
    assert!(!forged.contains("locked") && !forged.contains("555-0100"), "{forged}");

    let evil = "javascript:alert(document.cookie)//<script>";
    let page = format!("/apps/{app}");
    let html = d.page(&page).await;
    let csrf = html.split("name=\"_csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
    let resp = d
        .http
        .post(format!("{}{page}/endpoints", d.base))
        .header("cookie", &d.cookie)
        .header("origin", &d.base)
        .form(&[("_csrf", csrf.as_str()), ("url", evil)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    assert!(resp.headers().get("location").is_none());
    let body = resp.text().await.unwrap();
    assert!(body.contains("URL") && !body.contains("<script>"), "{body}");
}

/// Issues 17 and 18 on the endpoint and message pages, in a browser on the
/// manual clock: a receiver's `429 Retry-After: 30` shows as a pause with
/// its reason beside the rate limit; a key blocked behind a message that
/// failed for good is listed with what it waits on, the held message's page
/// says what it waits for, and Skip lets it go; an endpoint enabled again
/// offers what it missed while disabled, counted, and sends it only once
/// confirmed.
#[tokio::test]
async fn endpoint_page_shows_flow_blocked_keys_and_the_missed_messages_offer() {
    let t = TestServer::with_manual_clock().await;
    let base = t.server.url();
    let b = Browser::start().await;
    sign_in(&b, &base).await;

    // A pause with its reason, beside the limit.
    let rx = Receiver::start(Reply::Status(200, "ok")).await;
    let (app, ep) = t.app_with_endpoint(&rx.url, json!({"throttleRate": 10})).await;
    rx.script([Reply::Headers(429, &[("retry-after", "30")])]);
    t.send(&app, json!({"n": 1})).await;
    rx.wait_for(1).await;
    let paused = |wanted: bool| {
        let (t, path) = (&t, format!("/api/v1/app/{app}/endpoint/{ep}/flow"));
        crate::common::eventually("the endpoint's pause to start or end", move || {
            let path = path.clone();
            async move { (t.get(&path).await["pausedUntil"].is_string() == wanted).then_some(()) }
        })
    };
    paused(true).await;
    b.goto(&format!("{base}/apps/{app}/endpoints/{ep}")).await;
    let flow = b.wait_for_in("#flow", "paused until").await;
    assert!(flow.contains("10 messages/s"), "{flow}");
    assert!(flow.contains("429 with Retry-After: 30 s"), "{flow}");
    b.screenshot_of("endpoint-flow-paused", "#live").await;
    t.clock().advance(Duration::from_secs(31));
    rx.wait_for(2).await;
    paused(false).await;
    b.goto(&format!("{base}/apps/{app}/endpoints/{ep}")).await;
    let flow = b.find("#flow").await.text().await.unwrap();
    assert!(!flow.contains("paused until") && flow.contains("10 messages/s"), "{flow}");

    // A blocked key: its head failed for good (no retries), the next
    // message of the key waits for it until someone skips it.
    let rx = Receiver::start(Reply::Status(200, "ok")).await;
    let once = json!({"orderingOnFailure": "block", "retryPolicy": {"schedule": [], "timeout": 5}});
    let (app, ep) = t.app_with_endpoint(&rx.url, once).await;
    let keyed = |n: u32| json!({"eventType": "test.event", "payload": {"n": n}, "orderingKey": "order-1"});
    rx.script([Reply::Status(500, "down")]);
    let (_, head) = t.post(&format!("/api/v1/app/{app}/msg"), keyed(1)).await;
    let head = head["id"].as_str().unwrap().to_owned();
    rx.wait_for(1).await;
    t.wait_status(&app, &head, &ep, "fail").await;
    let (_, next) = t.post(&format!("/api/v1/app/{app}/msg"), keyed(2)).await;
    let next = next["id"].as_str().unwrap().to_owned();
    crate::common::eventually("the next message to be held", || async {
        (t.delivery(&app, &next, &ep).await["waitingFor"] == head).then_some(())
    })
    .await;

    b.goto(&format!("{base}/apps/{app}/messages/{next}")).await;
    let row = b.wait_for_in(".waiting", "waiting for").await;
    assert_eq!(row, format!("waiting for {head}"));
    b.click(".waiting a").await;
    b.wait_for_text("Attempts (1)").await;
    assert_eq!(b.path().await, format!("/apps/{app}/messages/{head}"), "the link leads to the head");

    b.goto(&format!("{base}/apps/{app}/endpoints/{ep}")).await;
    let blocked = b.wait_for_in("#blocked-keys", "order-1").await;
    assert!(blocked.contains(&head), "{blocked}");
    b.screenshot_of("endpoint-blocked-keys", "#blocked-keys").await;
    assert_eq!(rx.count(), 1, "nothing more goes to a blocked key");
    b.click("#blocked-keys form[action$='/skip'] button").await;
    b.client.accept_alert().await.unwrap();
    b.wait_for_text("Key skipped").await;
    let got = rx.wait_for(2).await;
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&got[1].body).unwrap()["n"], 2);
    t.wait_status(&app, &next, &ep, "success").await;
    assert_eq!(t.delivery(&app, &head, &ep).await["statusText"], "fail", "the head stays failed");
    assert!(!b.text().await.contains("Blocked ordering keys"));

    // Missed while disabled: counted, offered, sent once confirmed.
    let rx = Receiver::start(Reply::Status(200, "ok")).await;
    let (app, ep) = t.app_with_endpoint(&rx.url, json!({})).await;
    let page = format!("{base}/apps/{app}/endpoints/{ep}");
    b.goto(&page).await;
    b.click("form[action$='/toggle'] button").await;
    b.client.accept_alert().await.unwrap();
    b.wait_for_text("Endpoint disabled").await;
    let mut missed = Vec::new();
    for n in 0..3 {
        missed.push(t.send(&app, json!({"missed": n})).await);
    }
    b.click("form[action$='/toggle'] button").await;
    b.wait_for_text("Endpoint enabled").await;
    let offer = b.wait_for_in("#missed", "missed").await;
    assert!(offer.contains("missed 3 messages while it was disabled"), "{offer}");
    b.screenshot_of("endpoint-missed-offer", "#missed").await;
    b.click("#missed button").await;
    let confirm = b.wait_for_text("Send 3 messages").await;
    assert!(confirm.contains("3 messages for"), "{confirm}");
    assert_eq!(rx.count(), 0, "nothing is sent before confirming");
    for m in &missed {
        let deliveries = t.get(&format!("/api/v1/app/{app}/msg/{m}/endpoint")).await;
        assert_eq!(deliveries["data"].as_array().unwrap().len(), 0, "no delivery before confirming");
    }
    b.click("form[action$='/backfill'] button[type=submit]").await;
    b.wait_for_text("3 missed messages are being sent").await;
    let got = rx.wait_for(3).await;
    let mut ns: Vec<i64> = got
        .iter()
        .map(|r| serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["missed"].as_i64().unwrap())
        .collect();
    ns.sort();
    assert_eq!(ns, [0, 1, 2]);
    b.goto(&page).await;
    b.wait_for_text("Rate limit").await;
    assert!(!b.text().await.contains("This endpoint missed"), "the offer goes once they are sent");

    // Or it is dismissed, and nothing is sent.
    b.click("form[action$='/toggle'] button").await;
    b.client.accept_alert().await.unwrap();
    b.wait_for_text("Endpoint disabled").await;
    let unwanted = t.send(&app, json!({"missed": 3})).await;
    b.click("form[action$='/toggle'] button").await;
    b.wait_for_text("Endpoint enabled").await;
    b.wait_for_in("#missed", "missed 1 message while").await;
    b.click("form[action$='/dismiss-missed'] button").await;
    b.wait_for_text("will not be offered again").await;
    assert!(!b.text().await.contains("This endpoint missed"));
    let deliveries = t.get(&format!("/api/v1/app/{app}/msg/{unwanted}/endpoint")).await;
    assert_eq!(deliveries["data"].as_array().unwrap().len(), 0);
    assert_eq!(rx.count(), 3);
}

/// The rate limit, in-flight and ordering fields: out-of-range values are
/// explained in place (422), valid ones saved and shown by the API.
#[tokio::test]
async fn flow_settings_form_checks_and_saves_its_fields() {
    let t = TestServer::start().await;
    let rx = Receiver::start(Reply::Status(200, "")).await;
    let (app, ep) = t.app_with_endpoint(&rx.url, json!({})).await;
    let d = Dashboard::sign_in(&t).await;
    let page = format!("/apps/{app}/endpoints/{ep}");
    let action = format!("{page}/flow");
    for (fields, complaint) in [
        (
            vec![("maxInFlight", "1001")],
            "Max in flight: &#39;1001&#39; is not a whole number from 1 to 1000.",
        ),
        (vec![("maxInFlight", "0")], "Max in flight"),
        (vec![("throttleRate", "65536")], "Rate limit"),
        (vec![("throttleRate", "fast")], "Rate limit"),
        (vec![("orderingOnFailure", "retry")], "choose skip or block"),
    ] {
        let (status, html) = d.post(&page, &action, &fields).await;
        assert_eq!(status, 422, "{fields:?}");
        assert!(html.contains(complaint) || html.contains(&complaint.replace("&#39;", "'")), "{html}");
    }
    let unchanged = t.get(&format!("/api/v1/app/{app}/endpoint/{ep}")).await;
    assert!(unchanged["maxInFlight"].is_null() && unchanged["fifo"] != true, "{unchanged}");

    let fields =
        [("throttleRate", "25"), ("maxInFlight", "4"), ("fifo", "1"), ("orderingOnFailure", "block")];
    let (status, html) = d.post(&page, &action, &fields).await;
    assert_eq!(status, 303);
    assert!(html.contains("Settings saved.") && html.contains("25 messages/s"), "{html}");
    let shown = t.get(&format!("/api/v1/app/{app}/endpoint/{ep}")).await;
    assert_eq!(
        (&shown["throttleRate"], &shown["maxInFlight"], &shown["fifo"], &shown["orderingOnFailure"]),
        (&json!(25), &json!(4), &json!(true), &json!("block"))
    );
    // Emptied: back to the defaults.
    let (_, html) = d.post(&page, &action, &[("throttleRate", ""), ("maxInFlight", "")]).await;
    assert!(html.contains("no limit"), "{html}");
    let shown = t.get(&format!("/api/v1/app/{app}/endpoint/{ep}")).await;
    assert_eq!(
        (&shown["throttleRate"], &shown["maxInFlight"], &shown["fifo"], &shown["orderingOnFailure"]),
        (&json!(null), &json!(null), &json!(false), &json!("skip"))
    );
}

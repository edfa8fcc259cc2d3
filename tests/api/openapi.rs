//! `/openapi.json` on both listeners and `/docs` on the internal one: the documents
//! describe exactly the routes the server answers, pass an OpenAPI validator, and the
//! docs page renders in headless Chromium without fetching anything from elsewhere.

use std::io::Read as _;
use std::net::TcpListener;
use std::process::Command;
use std::sync::{Arc, Mutex};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::helpers::{StoreKind, TestApp};

const ORIGIN: &str = "https://acme.test";

crate::on_both_stores!(
    every_operation_in_each_document_is_served,
    the_documents_carry_the_contracts_error_formats_headers_and_security,
    both_documents_pass_an_openapi_validator,
    the_docs_page_renders_offline_in_headless_chromium,
);

async fn document(app: &TestApp, url: String) -> Value {
    let response = app.http.get(url).send().await.expect("request sent");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"].to_str().ok(),
        Some("application/json")
    );
    response.json().await.expect("a JSON document")
}

/// Every (path, method) of each document answers something other than the listener's
/// fallback (`404 no such endpoint`) or a 405: the document names no route the router
/// lacks. The other direction holds by construction (`routes!` registers both) and is
/// guarded by `http::openapi::tests::no_route_is_registered_outside_the_documented_router`.
async fn every_operation_in_each_document_is_served(kind: StoreKind) {
    let app = TestApp::spawn(kind).await;
    let key = app
        .create_key(json!({"name": "Acme", "origins": [ORIGIN]}))
        .await;
    let id = key["id"].as_str().expect("id");
    for (listener, base) in [("public", app.public("")), ("internal", app.internal(""))] {
        let spec = document(&app, format!("{base}/openapi.json")).await;
        let paths = spec["paths"].as_object().expect("paths");
        assert!(paths.len() >= 7, "{listener}: {} paths", paths.len());
        for (path, item) in paths {
            let concrete = path.replace("{id}", id).replace("{asset}", "init.js");
            for method in item.as_object().expect("path item").keys() {
                let method = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
                let mut request = app
                    .http
                    .request(method.clone(), format!("{base}{concrete}"))
                    .header("origin", ORIGIN)
                    .header("authorization", format!("Bearer {}", app.admin_token));
                if method == Method::POST {
                    request = request.json(&json!({}));
                }
                let response = request.send().await.expect("request sent");
                let status = response.status();
                let body = response.text().await.unwrap_or_default();
                assert_ne!(
                    status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{listener} {method} {path}"
                );
                assert!(
                    !(status == StatusCode::NOT_FOUND && body.contains("no such endpoint")),
                    "{listener} {method} {path} is in the document but not served: {body}"
                );
            }
        }
    }
    app.finish().await;
}

fn response<'a>(spec: &'a Value, path: &str, method: &str, status: &str) -> &'a Value {
    let response = &spec["paths"][path][method]["responses"][status];
    assert!(
        response.is_object(),
        "{method} {path} documents no {status}"
    );
    response
}

async fn the_documents_carry_the_contracts_error_formats_headers_and_security(kind: StoreKind) {
    let app = TestApp::spawn(kind).await;
    // No token needed for the internal document either (API.md).
    let public = document(&app, app.public("/openapi.json")).await;
    let internal = document(&app, app.internal("/openapi.json")).await;
    assert_eq!(public["openapi"], "3.1.0");
    assert_eq!(internal["openapi"], "3.1.0");

    // Public errors are text/plain sentences; internal ones JSON {error, message}.
    let guest = "/api/v1/widget/auth/guest";
    for status in ["400", "403", "413", "429", "503"] {
        let content = &response(&public, guest, "post", status)["content"];
        assert!(
            content["text/plain"].is_object(),
            "guest {status}: {content}"
        );
    }
    let commands = "/internal/v1/client-keys/{id}/commands";
    for status in ["400", "401", "404", "409", "413", "503"] {
        let content = &response(&internal, commands, "post", status)["content"];
        assert_eq!(
            content["application/json"]["schema"]["$ref"], "#/components/schemas/ErrorBody",
            "commands {status}"
        );
    }
    let error = &internal["components"]["schemas"]["ErrorBody"];
    assert_eq!(error["required"], json!(["error", "message"]));

    // Headers the contract promises.
    let config = "/api/v1/widget/config";
    let ok = &response(&public, config, "get", "200")["headers"];
    for header in [
        "ETag",
        "Access-Control-Allow-Origin",
        "Vary",
        "Cache-Control",
    ] {
        assert!(ok[header].is_object(), "config 200 lacks {header}");
    }
    assert!(response(&public, config, "get", "304").is_object());
    for path in [
        config,
        guest,
        "/api/v1/widget/auth/exchange",
        "/api/v1/widget/auth/refresh",
    ] {
        let preflight = &response(&public, path, "options", "204")["headers"];
        assert!(
            preflight["Access-Control-Allow-Origin"].is_object(),
            "{path}"
        );
    }
    assert!(public["paths"]["/api/v1/widget/auth/user-token"]["options"].is_null());
    for (path, status) in [
        (guest, "429"),
        ("/api/v1/widget/auth/user-token", "429"),
        ("/api/v1/widget/auth/refresh", "503"),
        ("/api/v1/widget/auth/exchange", "503"),
    ] {
        let headers = &response(&public, path, "post", status)["headers"];
        assert!(headers["Retry-After"].is_object(), "{path} {status}");
    }
    let no_store = &response(&public, guest, "post", "200")["headers"]["Cache-Control"];
    assert!(no_store.is_object());
    assert!(response(&internal, commands, "post", "503")["headers"]["Retry-After"].is_object());

    // Security: the secret key on user-token only, the admin token on /internal/v1.
    let schemes = &public["components"]["securitySchemes"];
    assert_eq!(schemes["secret_key"]["scheme"], "bearer");
    assert_eq!(
        public["paths"]["/api/v1/widget/auth/user-token"]["post"]["security"],
        json!([{"secret_key": []}])
    );
    assert!(public["paths"][guest]["post"]["security"].is_null());
    for (path, item) in internal["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("item") {
            let expected = if path.starts_with("/internal/v1/") {
                json!([{"admin_token": []}])
            } else {
                Value::Null
            };
            assert_eq!(operation["security"], expected, "{method} {path}");
        }
    }

    // Request schemas come from the Rust types: a command is one of the tagged types.
    let command = &internal["components"]["schemas"]["Command"];
    let tags: Vec<&str> = command["oneOf"]
        .as_array()
        .expect("oneOf")
        .iter()
        .filter_map(|variant| variant["properties"]["type"]["enum"][0].as_str())
        .collect();
    assert_eq!(
        tags,
        [
            "change_origins",
            "update_config",
            "set_token_policy",
            "rotate_secret_key",
            "rotate_public_key",
            "expire_previous_keys",
            "revoke_sessions",
            "disable",
            "enable"
        ]
    );
    app.finish().await;
}

/// Runs `python3 -m openapi_spec_validator` (tests/requirements.txt) on both documents.
async fn both_documents_pass_an_openapi_validator(kind: StoreKind) {
    let app = TestApp::spawn(kind).await;
    let dir = app.store.data_dir.join("openapi");
    std::fs::create_dir_all(&dir).expect("dir");
    let mut files = Vec::new();
    for (name, url) in [
        ("public", app.public("/openapi.json")),
        ("internal", app.internal("/openapi.json")),
    ] {
        let spec = document(&app, url).await;
        let file = dir.join(format!("{name}.json"));
        std::fs::write(&file, spec.to_string()).expect("write");
        files.push(file);
    }
    let output = Command::new("python3")
        .args(["-m", "openapi_spec_validator"])
        .args(&files)
        .output()
        .expect("python3 runs (pip install -r tests/requirements.txt)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report: String = stdout.chars().take(2000).collect();
    assert!(
        output.status.success(),
        "validator: {report}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(stdout.matches(": OK").count(), 2, "{stdout}");
    app.finish().await;
}

/// A proxy that only records the request lines it receives and answers nothing:
/// Chromium sends every request for another host to it, so an empty record means the
/// page fetched nothing from elsewhere.
fn recording_proxy() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = listener.local_addr().expect("addr").to_string();
    let record = Arc::new(Mutex::new(Vec::new()));
    let seen = record.clone();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut buffer = [0u8; 1024];
            let read = stream.read(&mut buffer).unwrap_or(0);
            let head = String::from_utf8_lossy(&buffer[..read]);
            let line = head.lines().next().unwrap_or_default().to_owned();
            if let Ok(mut seen) = seen.lock() {
                seen.push(line);
            }
        }
    });
    (address, record)
}

/// A request line (`GET http://host/…` or `CONNECT host:443`) to one of the browser's
/// own service hosts, which Swagger UI never names.
fn is_chromium_service(line: &str) -> bool {
    let target = line.split_whitespace().nth(1).unwrap_or_default();
    let host = target
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .split(['/', ':'])
        .next()
        .unwrap_or_default();
    ["google.com", "googleapis.com"]
        .iter()
        .any(|service| host == *service || host.ends_with(&format!(".{service}")))
}

async fn the_docs_page_renders_offline_in_headless_chromium(kind: StoreKind) {
    let app = TestApp::spawn(kind).await;
    let page = app
        .http
        .get(app.internal("/docs"))
        .send()
        .await
        .expect("sent");
    assert_eq!(page.status(), StatusCode::OK);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .expect("csp");
    assert!(csp.starts_with("default-src 'self'"), "{csp}");
    let profile = app.store.data_dir.join("chromium-profile");
    let (proxy, requests_elsewhere) = recording_proxy();
    let url = app.internal("/docs");
    let output = tokio::task::spawn_blocking(move || {
        Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                "--virtual-time-budget=10000",
                &format!("--proxy-server=http://{proxy}"),
                &format!("--user-data-dir={}", profile.display()),
                "--dump-dom",
                &url,
            ])
            .output()
            .expect("chromium runs (apt-get install chromium)")
    })
    .await
    .expect("chromium finished");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let dom = String::from_utf8_lossy(&output.stdout);
    // Rendered by Swagger UI into the page (the document itself is fetched, never
    // inlined, so these are elements the UI built).
    for path in [
        "/internal/v1/client-keys/{id}/commands",
        "/internal/v1/client-keys/{id}/events",
        "/internal/v1/audit/verify",
        "/metrics",
    ] {
        assert!(
            dom.contains(&format!("data-path=\"{path}\"")),
            "{path} not rendered: {}",
            &dom[..dom.len().min(2000)]
        );
    }
    assert!(dom.contains("widget-auth internal (admin) API"));
    // Chromium's own services (component updates, network time, sign-in) also go
    // through the proxy; anything else came from the page.
    let elsewhere: Vec<String> = requests_elsewhere
        .lock()
        .map(|r| r.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|line| !is_chromium_service(line))
        .collect();
    assert!(
        elsewhere.is_empty(),
        "the page requested other hosts: {elsewhere:?}"
    );
    app.finish().await;
}

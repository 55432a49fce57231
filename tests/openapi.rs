//! The OpenAPI description (`GET /v1/openapi.json`) is generated from the
//! routes: it names every route of the v1 interface with its error body, and
//! `GET /v1/docs` renders it with no other origin. Schemathesis checks the
//! server against it in depth (tests/openapi/run.sh); the requests it found
//! refused or accepted wrongly stay fixed here.
//!
//! Every await has a limit that only turns "never" into a failure; nothing
//! asserts a duration.

mod support;

use serde_json::{json, Value};
use support::{within, Server, STEP};

async fn get(url: &str) -> (u16, reqwest::header::HeaderMap, String) {
    within(STEP, url, async {
        let response = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("http client")
            .get(url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        (status, headers, response.text().await.expect("body"))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_description_names_every_route_and_its_errors() {
    let server = Server::start("").await;
    let base = server.base();
    let (status, headers, body) = get(&format!("{base}/v1/openapi.json")).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/json");
    let spec: Value = serde_json::from_str(&body).expect("the description is JSON");
    assert_eq!(spec["openapi"], "3.1.0");
    let (_, _, stats) = get(&format!("{base}/v1/stats")).await;
    let stats: Value = serde_json::from_str(&stats).expect("stats");
    assert_eq!(spec["info"]["version"], stats["version"]);

    let expected = [
        ("/v1/rooms/{room}/events", "post"),
        ("/v1/rooms/{room}/events", "get"),
        ("/v1/rooms/{room}", "get"),
        ("/v1/rooms/{room}/ws", "get"),
        ("/v1/ws", "get"),
        ("/v1/rooms", "get"),
        ("/v1/stats", "get"),
        ("/metrics", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
    ];
    let mut ids = Vec::new();
    for (path, method) in expected {
        let op = &spec["paths"][path][method];
        assert!(op.is_object(), "{method} {path} is described: {op}");
        ids.push(op["operationId"].as_str().expect("operationId").to_owned());
        assert!(op["summary"].is_string(), "{method} {path} has a summary");
        // Every refusal of the API is the one error body.
        for (code, response) in op["responses"].as_object().expect("responses") {
            if code.starts_with('4') {
                assert_eq!(
                    response["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/ErrorBody",
                    "{method} {path} {code}"
                );
            }
        }
    }
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "operation ids are unique: {ids:?}");

    // The error codes are the protocol's, listed in the schema.
    let codes = &spec["components"]["schemas"]["ErrorBody"]["properties"]["error"]["enum"];
    let codes: Vec<&str> = codes
        .as_array()
        .expect("enum")
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    for code in [
        "invalid_room",
        "conflict",
        "store_unavailable",
        "request_timeout",
    ] {
        assert!(codes.contains(&code), "{code} in {codes:?}");
    }
    assert_eq!(
        spec["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_page_needs_no_other_origin() {
    let server = Server::start("").await;
    let base = server.base();
    let (status, headers, page) = get(&format!("{base}/v1/docs")).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    assert!(headers["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("default-src 'self'"));
    assert!(
        !page.contains("http://") && !page.contains("https://"),
        "no CDN in the page"
    );
    for asset in ["api-reference.js", "api.css", "style.css", "theme.js"] {
        assert!(
            page.contains(&format!("../dashboard/{asset}")),
            "the page names {asset}"
        );
        let (status, _, body) = get(&format!("{base}/dashboard/{asset}")).await;
        assert_eq!(status, 200, "{asset}");
        assert!(
            !body.contains("https://"),
            "{asset} loads nothing from elsewhere"
        );
    }
    assert!(
        page.contains("openapi.json"),
        "the page links the description"
    );
}

/// What Schemathesis found, fixed: a body that is a JSON array was read as
/// the publish body's fields in order; an `expected_seq` written `7.0` (an
/// integer in JSON Schema) was refused; a `limit` past the 64-bit signed
/// range was taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_schemathesis_found_are_answered_as_described() {
    let server = Server::start("").await;
    let api = server.api();
    let (status, body) = api.post_bytes("schema-a", b"[null, null]".to_vec()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("bad_request")),
        "{body}"
    );

    let (status, body) = api
        .post("schema-a", &json!({"data": 1, "expected_seq": 0.0}), None)
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = api
        .post("schema-a", &json!({"data": 2, "expected_seq": 1.0}), None)
        .await;
    assert_eq!((status, body["seq"].as_u64()), (201, Some(2)), "{body}");
    let (status, body) = api
        .post("schema-a", &json!({"data": 3, "expected_seq": 1.5}), None)
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("bad_request")),
        "{body}"
    );

    for path in [
        "/v1/rooms/schema-a/events?limit=9223372036854775808",
        "/v1/rooms?limit=9223372036854775808",
    ] {
        let (status, _, body) = get(&format!("{}{path}", server.base())).await;
        assert_eq!(status, 400, "{path}: {body}");
        let body: Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(body["error"], "invalid_parameter", "{path}");
    }
    let (status, _, _) = get(&format!(
        "{}/v1/rooms/schema-a/events?limit=9223372036854775807",
        server.base()
    ))
    .await;
    assert_eq!(status, 200);
}

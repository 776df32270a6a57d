//! The fake against a plain blocking HTTP/1.1 client: what it answers, as a real API server
//! would. Its use by kube-rs is proved by the control plane's and the CNI plugin's tests.

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::Duration,
};

use serde_json::{json, Value};

use super::*;

/// One `Connection: close` exchange: the status and the body (chunked bodies de-chunked
/// roughly: the JSON lines are what matters).
fn exchange(addr: SocketAddr, method: &str, target: &str, body: &str) -> (u16, String) {
    let mut tcp = TcpStream::connect(addr).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    write!(
        tcp,
        "{method} {target} HTTP/1.1\r\nHost: fake\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut raw = String::new();
    tcp.read_to_string(&mut raw).expect("read to the end");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a response");
    let status = head[9..12].parse().expect("status");
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body.lines()
            .filter(|l| l.starts_with('{'))
            .collect::<Vec<_>>()
            .join("\n")
    } else {
        body.to_string()
    };
    (status, body)
}

fn json_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

fn pod(name: &str) -> Value {
    json!({"metadata": {"name": name, "namespace": "shop"}, "spec": {"containers": []}})
}

#[test]
fn one_object_is_got_by_its_path_and_an_unknown_one_is_a_404_status() {
    let fake = FakeKube::builder().object(Kind::Pod, pod("web")).start();
    let (status, body) = exchange(fake.addr, "GET", "/api/v1/namespaces/shop/pods/web", "");
    assert_eq!(status, 200, "{body}");
    let v = json_of(&body);
    assert_eq!(v["kind"], "Pod");
    assert_eq!(v["metadata"]["resourceVersion"], "1");
    let (status, body) = exchange(fake.addr, "GET", "/api/v1/namespaces/shop/pods/gone", "");
    assert_eq!(status, 404);
    assert_eq!(json_of(&body)["reason"], "NotFound");
    assert_eq!(fake.gets(Kind::Pod).len(), 2);
    fake.assert_no_problems();

    let (status, _) = exchange(fake.addr, "GET", "/api/v1/nodes", "");
    assert_eq!(status, 404);
    assert_eq!(fake.problems().len(), 1, "an unknown path is a problem");
}

#[test]
fn lists_come_in_pages_at_one_resource_version() {
    let fake = FakeKube::start();
    fake.with(|c| {
        c.set_max_page(1);
        c.apply(Kind::Pod, pod("a"));
        c.apply(Kind::Pod, pod("b"));
    });
    let (status, body) = exchange(fake.addr, "GET", "/api/v1/pods?limit=500", "");
    assert_eq!(status, 200, "{body}");
    let first = json_of(&body);
    assert_eq!(first["kind"], "PodList");
    assert_eq!(first["metadata"]["resourceVersion"], "2");
    assert_eq!(first["items"].as_array().map(Vec::len), Some(1));
    let token = first["metadata"]["continue"].as_str().expect("continue");
    // A change between pages is not in the second page.
    fake.apply(Kind::Pod, pod("c"));
    let (_, body) = exchange(
        fake.addr,
        "GET",
        &format!("/api/v1/pods?limit=500&continue={token}"),
        "",
    );
    let second = json_of(&body);
    assert_eq!(second["items"][0]["metadata"]["name"], "b");
    assert!(second["metadata"].get("continue").is_none());
    assert_eq!(fake.lists(Kind::Pod).len(), 2);
    fake.assert_no_problems();
}

#[test]
fn a_watch_replays_history_and_an_old_version_is_gone() {
    let fake = FakeKube::start();
    fake.apply(
        Kind::Service,
        json!({"metadata": {"name": "a", "namespace": "shop"}}),
    );
    fake.apply(
        Kind::Service,
        json!({"metadata": {"name": "b", "namespace": "shop"}}),
    );
    fake.delete(Kind::Service, "shop", "a");
    let watcher = std::thread::spawn({
        let addr = fake.addr;
        move || {
            exchange(
                addr,
                "GET",
                "/api/v1/services?watch=true&resourceVersion=1",
                "",
            )
        }
    });
    let opened = crate::wait::until("the watch is open", crate::wait::PATIENCE, || {
        (fake.open_watches(Kind::Service) == 1).then_some(())
    });
    assert_eq!(opened, Ok(()));
    fake.bookmark();
    fake.cut_watches();
    let (status, body) = watcher.join().expect("watcher");
    assert_eq!(status, 200);
    let events: Vec<Value> = body.lines().map(json_of).collect();
    let types: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(types, ["ADDED", "DELETED", "BOOKMARK"], "{body}");
    assert_eq!(events[2]["object"]["metadata"]["resourceVersion"], "3");

    fake.with(Cluster::compact);
    let (status, body) = exchange(
        fake.addr,
        "GET",
        "/api/v1/services?watch=true&resourceVersion=1",
        "",
    );
    assert_eq!(status, 200);
    let event = json_of(&body);
    assert_eq!(
        (event["type"].as_str(), event["object"]["code"].as_u64()),
        (Some("ERROR"), Some(410))
    );
    assert_eq!(fake.watches(Kind::Service).len(), 2);
    fake.assert_no_problems();
}

#[test]
fn token_reviews_answer_each_token_s_verdict() {
    let fake = FakeKube::builder()
        .token(
            "sa",
            Verdict::ServiceAccount {
                ns: "shop".into(),
                sa: "web".into(),
            },
        )
        .start();
    let review = |token: &str| {
        json!({
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
            "spec": {"token": token, "audiences": [TOKEN_AUDIENCE]},
        })
        .to_string()
    };
    let (status, body) = exchange(fake.addr, "POST", TOKEN_REVIEWS, &review("sa"));
    assert_eq!(status, 201, "{body}");
    let v = json_of(&body);
    assert_eq!(v["status"]["authenticated"], true);
    assert_eq!(
        v["status"]["user"]["username"],
        "system:serviceaccount:shop:web"
    );
    let (_, body) = exchange(fake.addr, "POST", TOKEN_REVIEWS, &review("nope"));
    assert!(json_of(&body)["status"]["error"].is_string());
    assert_eq!(fake.reviewed_tokens(), ["sa", "nope"]);
    fake.assert_no_problems();

    let (status, _) = exchange(fake.addr, "POST", TOKEN_REVIEWS, "{\"kind\": \"Pod\"}");
    assert_eq!(status, 400);
    assert_eq!(fake.problems().len(), 1);
}

#[test]
fn down_closes_connections_unanswered_and_up_serves_again() {
    let fake = FakeKube::builder().object(Kind::Pod, pod("web")).start();
    fake.set_down(true);
    let mut tcp = TcpStream::connect(fake.addr).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let _ = tcp.write_all(b"GET /api/v1/namespaces/shop/pods/web HTTP/1.1\r\nHost: f\r\n\r\n");
    let mut got = Vec::new();
    let _ = tcp.read_to_end(&mut got);
    assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
    let counted = crate::wait::until("the refusal counted", crate::wait::PATIENCE, || {
        (fake.refused_connections() >= 1).then_some(())
    });
    assert_eq!(counted, Ok(()));
    fake.set_down(false);
    let (status, _) = exchange(fake.addr, "GET", "/api/v1/namespaces/shop/pods/web", "");
    assert_eq!(status, 200);
}

#[test]
fn a_kubeconfig_names_the_server_and_the_token() {
    let dir = std::env::temp_dir().join(format!("weft-testkit-kube-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let path = write_kubeconfig(&dir.join("k"), "http://127.0.0.1:1", Some("t0k"));
    let text = std::fs::read_to_string(&path).expect("read");
    assert!(text.contains("server: http://127.0.0.1:1"), "{text}");
    assert!(text.contains("token: t0k"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

//! `GET /jobs/:jobid/state/:uid/:name?key=<JSON>` in front of a real
//! running job: the answer's shape, keys with characters that need
//! URL-encoding, the owning subtask, and every refusal with its status and
//! stable code; state values need the token over TCP, not over the socket.

mod common;

use std::time::{Duration, Instant};

use cairn::prelude::*;
use cairn::state::keygroup::{key_group_for_key, subtask_for_key_group};
use cairn_rest_client::client::percent_encode;
use cairn_rest_client::{HttpClient, HttpResponse, Registry};
use cairn_rest_server::{serve_with, RestServer, ServeOptions};
use common::TempDir;
use serde_json::{json, Value};

const KEYS: u64 = 6;

/// Counts events per key `"user <n>"` (a space and quotes to encode).
#[derive(Clone, Default)]
struct PerUser {
    count: Option<ValueState<u64>>,
    last: Option<ValueState<GeneratedEvent>>,
}

impl KeyedProcessFunction<String, GeneratedEvent, ()> for PerUser {
    fn open(&mut self, ctx: &mut KeyedOpenContext<'_>) -> OpResult {
        self.count = Some(ctx.value_state(ValueStateDescriptor::new("count").queryable("events-seen"))?);
        self.last = Some(ctx.value_state(ValueStateDescriptor::new("last"))?);
        Ok(())
    }

    fn process_element(&mut self, e: GeneratedEvent, ctx: &mut KeyedContext<'_, String, ()>) -> OpResult {
        let count = self.count.as_ref().ok_or("not opened")?;
        let n = count.value(ctx)?.unwrap_or(0) + 1;
        count.update(ctx, &n)?;
        self.last.as_ref().ok_or("not opened")?.update(ctx, &e)?;
        Ok(())
    }
}

struct Running {
    _tmp: TempDir,
    handle: Option<JobHandle>,
    server: RestServer,
    http: HttpClient,
    jid: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.http.patch(&format!("/jobs/{}?mode=cancel", self.jid));
        if let Some(h) = self.handle.take() {
            let _ = h.wait();
        }
        self.server.shutdown();
    }
}

fn start(token: Option<&str>) -> Running {
    let tmp = TempDir::new("state");
    let env = StreamEnv::new();
    env.set_parallelism(3).unwrap();
    if let Some(t) = token {
        env.set_config("rest.auth-token", t).unwrap();
    }
    env.source(GeneratorSource::new(1 << 40, KEYS).rate(3_000))
        .uid("events")
        .key_by(|e: &GeneratedEvent| format!("user \"{}\"", e.key))
        .process(PerUser::default())
        .uid("per user/v1")
        .sink(DiscardSink)
        .uid("discard");
    let handle = env.execute_async("state queries").unwrap();
    let server = serve_with(
        handle.client(),
        &env.config(),
        ServeOptions {
            registry: Some(Registry::new(tmp.path().join("home"))),
            linger: Duration::ZERO,
            ..Default::default()
        },
    )
    .unwrap();
    let http = HttpClient::new(server.address().to_string()).with_token(token.map(String::from));
    let jid = handle.job_id().to_string();
    Running {
        _tmp: tmp,
        handle: Some(handle),
        server,
        http,
        jid,
    }
}

fn state_path(jid: &str, uid: &str, name: &str, key: &str) -> String {
    format!(
        "/jobs/{jid}/state/{}/{}?key={}",
        percent_encode(uid),
        percent_encode(name),
        percent_encode(key)
    )
}

#[track_caller]
fn assert_error(r: &HttpResponse, status: u16, code: &str, needle: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(r.error_code(), Some(code), "{}", r.text());
    let msg = r.json()["errors"][0].as_str().unwrap_or_default().to_string();
    assert!(msg.contains(needle), "message {msg:?} lacks {needle:?}");
}

/// Waits until every key has been counted at least once.
fn wait_counted(r: &Running) {
    let deadline = Instant::now() + Duration::from_secs(60);
    for k in 0..KEYS {
        let key = serde_json::to_string(&format!("user \"{k}\"")).unwrap();
        loop {
            let resp = r
                .http
                .get(&state_path(&r.jid, "per user/v1", "events-seen", &key))
                .unwrap();
            if resp.status == 200 && resp.json()["value"].as_u64().is_some() {
                break;
            }
            assert!(Instant::now() < deadline, "key {k} never counted: {}", resp.text());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn a_running_job_answers_state_queries_over_rest() {
    let r = start(None);
    wait_counted(&r);
    for k in 0..KEYS {
        let key = format!("user \"{k}\"");
        let key_json = serde_json::to_string(&key).unwrap();
        let path = state_path(&r.jid, "per user/v1", "events-seen", &key_json);
        let first = r.http.get(&path).unwrap();
        assert_eq!(first.status, 200, "{}", first.text());
        let v = first.json();
        let kg = key_group_for_key(&key, 128).unwrap();
        assert_eq!(
            v,
            json!({
                "job-id": r.jid,
                "uid": "per user/v1",
                "operator": v["operator"],
                "state": "events-seen",
                "state-name": "count",
                "kind": "Value",
                "value-type": v["value-type"],
                "key": key,
                "key-group": kg,
                "subtask": subtask_for_key_group(128, 3, kg),
                "value": v["value"],
            })
        );
        assert!(v["value-type"].as_str().unwrap().contains("u64"), "{v}");
        // Live: the count only grows while the job runs.
        let n = v["value"].as_u64().unwrap();
        let later = r.http.get(&path).unwrap().json()["value"].as_u64().unwrap();
        assert!(later >= n && n >= 1, "{n} then {later}");
    }
    // A key the job never saw: 200 with a null value.
    let v = r
        .http
        .get(&state_path(&r.jid, "per user/v1", "events-seen", "\"user \\\"99\\\"\""))
        .unwrap();
    assert_eq!(
        (v.status, v.json()["value"].clone()),
        (200, Value::Null),
        "{}",
        v.text()
    );
}

#[test]
fn state_queries_that_cannot_be_answered_get_clear_4xx() {
    let r = start(None);
    wait_counted(&r);
    let jid = r.jid.clone();
    let get = |p: &str| r.http.get(p).unwrap();
    let key = "\"user \\\"1\\\"\"";
    assert_error(
        &get(&state_path(&jid, "nope", "events-seen", key)),
        404,
        "UNKNOWN_OPERATOR",
        "no operator with uid 'nope'; operators with queryable state: 'per user/v1'",
    );
    assert_error(
        &get(&state_path(&jid, "events", "events-seen", key)),
        404,
        "UNKNOWN_OPERATOR",
        "operator 'events' has no queryable state",
    );
    assert_error(
        &get(&state_path(&jid, "per user/v1", "last", key)),
        404,
        "UNKNOWN_STATE",
        "no state queryable as 'last'; its queryable states: 'events-seen'",
    );
    assert_error(
        &get(&state_path(&jid, "per user/v1", "count", key)),
        404,
        "UNKNOWN_STATE",
        "state 'count' is queryable as 'events-seen'",
    );
    assert_error(
        &get(&state_path(&jid, "per user/v1", "events-seen", "user 1")),
        400,
        "INVALID_KEY",
        "is not JSON",
    );
    assert_error(
        &get(&state_path(&jid, "per user/v1", "events-seen", "[1,2]")),
        400,
        "INVALID_KEY",
        "not a key of operator 'per user/v1' (key type alloc::string::String)",
    );
    let no_key = format!("/jobs/{jid}/state/{}/events-seen", percent_encode("per user/v1"));
    assert_error(&get(&no_key), 400, "MISSING_KEY", "query parameter 'key'");
    assert_error(
        &get(&state_path(
            "0123456789abcdef0123456789abcdef",
            "per user/v1",
            "events-seen",
            key,
        )),
        404,
        "JOB_NOT_FOUND",
        "not found",
    );
    let post = r
        .http
        .post(&state_path(&jid, "per user/v1", "events-seen", key), &json!({}))
        .unwrap();
    assert_error(&post, 405, "METHOD_NOT_ALLOWED", "use GET");
}

#[test]
fn state_values_need_the_token_over_tcp_but_not_over_the_socket() {
    let r = start(Some("s3cret"));
    wait_counted(&r);
    let path = state_path(&r.jid, "per user/v1", "events-seen", "\"user \\\"2\\\"\"");
    let anonymous = HttpClient::new(r.server.address().to_string());
    assert_error(
        &anonymous.get(&path).unwrap(),
        401,
        "UNAUTHORIZED",
        "Authorization: Bearer",
    );
    assert_eq!(r.http.get(&path).unwrap().status, 200);
    // Other reads stay open, as before.
    assert_eq!(anonymous.get(&format!("/jobs/{}", r.jid)).unwrap().status, 200);
    let socket = r.server.socket_path().expect("registered with a socket");
    let local = HttpClient::unix(socket);
    let v = local.get(&path).unwrap();
    assert_eq!(v.status, 200, "{}", v.text());
    assert!(v.json()["value"].as_u64().is_some());
}

#[test]
fn a_finished_job_answers_that_it_is_not_running() {
    let env = StreamEnv::new();
    env.set_parallelism(2).unwrap();
    env.from_collection((0..100u64).collect::<Vec<_>>())
        .uid("numbers")
        .key_by(|n: &u64| n % 3)
        .process(Counter::default())
        .uid("counter")
        .sink(DiscardSink)
        .uid("discard");
    let handle = env.execute_async("short").unwrap();
    let client = handle.client();
    let mut server = serve_with(
        client,
        &env.config(),
        ServeOptions {
            registry: None,
            linger: Duration::ZERO,
            ..Default::default()
        },
    )
    .unwrap();
    let jid = handle.job_id().to_string();
    handle.wait().unwrap();
    let http = HttpClient::new(server.address().to_string());
    assert_error(
        &http.get(&state_path(&jid, "counter", "count", "1")).unwrap(),
        409,
        "JOB_NOT_RUNNING",
        "the job is Finished, not running",
    );
    server.shutdown();
}

#[derive(Clone, Default)]
struct Counter {
    count: Option<ValueState<u64>>,
}

impl KeyedProcessFunction<u64, u64, ()> for Counter {
    fn open(&mut self, ctx: &mut KeyedOpenContext<'_>) -> OpResult {
        self.count = Some(ctx.value_state(ValueStateDescriptor::new("count").queryable("count"))?);
        Ok(())
    }

    fn process_element(&mut self, _n: u64, ctx: &mut KeyedContext<'_, u64, ()>) -> OpResult {
        let count = self.count.as_ref().ok_or("not opened")?;
        let n = count.value(ctx)?.unwrap_or(0) + 1;
        count.update(ctx, &n)?;
        Ok(())
    }
}

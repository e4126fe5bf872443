//! Every endpoint and every error case, over real sockets, against a
//! scripted control loop (see `common`).

mod common;

use std::net::TcpListener;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use cairn_config::Configuration;
use cairn_rest_client::{HttpClient, HttpResponse, Registry};
use cairn_rest_server::{send_raw, serve_with, RestError, RestServer, ServeOptions};
use common::{write_snapshot, ScriptConfig, Scripted, TempDir, JOB_ID};
use serde_json::{json, Value};

struct Env {
    tmp: TempDir,
    job: Scripted,
    server: RestServer,
    http: HttpClient,
    savepoints: PathBuf,
    checkpoints: PathBuf,
    extra: PathBuf,
}

fn start_with(token: Option<&str>, delay: Duration) -> Env {
    let tmp = TempDir::new("ep");
    let savepoints = tmp.0.join("savepoints");
    let checkpoints = tmp.0.join("checkpoints");
    let extra = tmp.0.join("extra");
    for d in [&savepoints, &checkpoints, &extra] {
        std::fs::create_dir_all(d).unwrap();
    }
    let job = Scripted::start(ScriptConfig {
        checkpoint_dir: Some(checkpoints.clone()),
        savepoint_dir: Some(savepoints.clone()),
        fail_marker: "fail-here",
        delay,
    });
    let mut config = Configuration::new();
    config.set("rest.port", "0").unwrap();
    config
        .set(
            "execution.checkpointing.savepoint-dir",
            &savepoints.display().to_string(),
        )
        .unwrap();
    config
        .set("execution.checkpointing.dir", &checkpoints.display().to_string())
        .unwrap();
    config.set("rest.allowed-paths", &extra.display().to_string()).unwrap();
    if let Some(t) = token {
        config.set("rest.auth-token", t).unwrap();
    }
    let server = serve_with(
        job.client.clone(),
        &config,
        ServeOptions {
            registry: Some(Registry::new(tmp.0.join("home"))),
            linger: Duration::from_secs(3),
            ..Default::default()
        },
    )
    .unwrap();
    let http = HttpClient::new(server.address().to_string()).with_token(token.map(String::from));
    Env {
        tmp,
        job,
        server,
        http,
        savepoints,
        checkpoints,
        extra,
    }
}

fn start() -> Env {
    start_with(None, Duration::ZERO)
}

fn jp(rest: &str) -> String {
    format!("/jobs/{JOB_ID}{rest}")
}

#[track_caller]
fn assert_error(r: &HttpResponse, status: u16, code: &str, needle: &str) {
    let v = r.json();
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(r.error_code(), Some(code), "{}", r.text());
    assert_eq!(
        v.as_object().map(|o| o.len()),
        Some(1),
        "Flink's error shape: {}",
        r.text()
    );
    let msg = v["errors"][0].as_str().unwrap_or_default();
    assert!(msg.contains(needle), "message {msg:?} lacks {needle:?}");
    assert!(
        r.header("content-type").unwrap().starts_with("application/json"),
        "{:?}",
        r.headers
    );
}

fn wait_done(http: &HttpClient, path: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = http.get(path).unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        let v = r.json();
        if v["status"]["id"] != "IN_PROGRESS" {
            return v;
        }
        assert!(Instant::now() < deadline, "still in progress: {v}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn state(http: &HttpClient) -> String {
    http.get(&jp("")).unwrap().json()["state"].as_str().unwrap().to_string()
}

#[test]
fn jobs_details_and_routing() {
    let e = start();
    let r = e.http.get("/jobs").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({"jobs": [{"id": JOB_ID, "status": "RUNNING"}]}));
    assert_eq!(e.http.get("/v1/jobs").unwrap().json(), r.json());

    let o = e.http.get("/jobs/overview").unwrap().json();
    assert_eq!(o["jobs"][0]["jid"], JOB_ID);
    assert_eq!(o["jobs"][0]["name"], "scripted job");
    assert_eq!(o["jobs"][0]["state"], "RUNNING");
    assert_eq!(o["jobs"][0]["end-time"], -1);
    assert_eq!(o["jobs"][0]["tasks"]["total"], 3);
    assert_eq!(o["jobs"][0]["tasks"]["running"], 3);

    let d = e.http.get(&jp("")).unwrap().json();
    assert_eq!(d["jid"], JOB_ID);
    assert_eq!(d["state"], "RUNNING");
    assert_eq!(d["maxParallelism"], 128);
    assert_eq!(d["vertices"][0]["name"], "count per user");
    assert_eq!(d["vertices"][0]["parallelism"], 3);
    assert_eq!(d["vertices"][0]["tasks"]["RUNNING"], 3);
    assert_eq!(d["status-counts"]["RUNNING"], 1);
    assert!(d["timestamps"]["RUNNING"].as_u64().unwrap() > 0);
    assert_eq!(d["plan"]["nodes"][0]["id"], d["vertices"][0]["id"]);
    assert!(d["start-time"].as_u64().unwrap() > 0);
    assert!(
        d.get("restarts").is_none(),
        "Cairn's additions stay out of Flink's shape"
    );
    // Cairn's additions.
    let c = e.http.get(&jp("/cairn")).unwrap().json();
    assert_eq!(c["operators"][0]["uid"], "counter");
    assert_eq!(c["restarts"], 0);
    assert_eq!(e.http.get(&jp("/status")).unwrap().json(), json!({"status": "RUNNING"}));
    assert_eq!(
        e.http.get(&jp("/execution-result")).unwrap().json(),
        json!({"status": {"id": "IN_PROGRESS"}})
    );
    assert_eq!(e.http.get(&jp("/plan")).unwrap().json()["plan"], d["plan"]);
    let v = d["vertices"][0]["id"].as_str().unwrap().to_string();
    let vd = e.http.get(&jp(&format!("/vertices/{v}"))).unwrap().json();
    assert_eq!(vd["subtasks"].as_array().unwrap().len(), 3);
    let m = e.http.get(&jp(&format!("/vertices/{v}/metrics"))).unwrap().json();
    assert!(m.as_array().unwrap().iter().any(|x| x["id"] == "2.numRecordsIn"), "{m}");
    let m = e
        .http
        .get(&jp(&format!("/vertices/{v}/metrics?get=1.numRecordsIn")))
        .unwrap()
        .json();
    assert_eq!(m, json!([{"id": "1.numRecordsIn", "value": "11"}]));
    let m = e
        .http
        .get(&jp(&format!(
            "/vertices/{v}/subtasks/metrics?get=numRecordsIn&agg=sum,max"
        )))
        .unwrap()
        .json();
    assert_eq!(m, json!([{"id": "numRecordsIn", "sum": 33.0, "max": 12.0}]));
    let m = e
        .http
        .get(&jp(&format!(
            "/vertices/{v}/subtasks/metrics?get=numRecordsOut&agg=sum"
        )))
        .unwrap()
        .json();
    assert!(m[0]["sum"].is_number(), "{m}");
    assert!(
        e.http
            .get(&jp(&format!("/vertices/{v}/subtasks/2/metrics")))
            .unwrap()
            .status
            == 200
    );
    assert_error(
        &e.http.get(&jp(&format!("/vertices/{v}/subtasks/3/metrics"))).unwrap(),
        404,
        "SUBTASK_NOT_FOUND",
        "0 to 2",
    );
    assert_error(
        &e.http.get(&jp("/vertices/ffffffffffffffffffffffffffffffff")).unwrap(),
        404,
        "VERTEX_NOT_FOUND",
        "no vertex",
    );
    let w = e.http.get(&jp(&format!("/vertices/{v}/watermarks"))).unwrap().json();
    assert_eq!(w[2], json!({"id": "2.currentInputWatermark", "value": "1000"}));
    assert_eq!(
        e.http.get(&jp(&format!("/vertices/{v}/backpressure"))).unwrap().json()["status"],
        "ok"
    );
    let jm = e.http.get("/jobs/metrics?get=numRestarts").unwrap().json();
    assert_eq!(jm[0]["id"], "numRestarts");
    assert!(jm[0]["max"].is_number());
    assert_eq!(
        e.http.get(&jp("/exceptions")).unwrap().json()["exceptionHistory"]["entries"],
        json!([])
    );
    let ov = e.http.get("/overview").unwrap().json();
    assert_eq!(ov["jobs-running"], 1);

    let r = e.http.get("/jobs/ffffffffffffffffffffffffffffffff").unwrap();
    assert_error(&r, 404, "JOB_NOT_FOUND", "ffffffffffffffffffffffffffffffff");
    let r = e
        .http
        .get("/jobs/ffffffffffffffffffffffffffffffff/checkpoints")
        .unwrap();
    assert_error(&r, 404, "JOB_NOT_FOUND", "this server serves job");
    let r = e.http.get("/jobs/not-a-job").unwrap();
    assert_error(&r, 400, "INVALID_JOB_ID", "32 lowercase hexadecimal");
    let r = e.http.get("/nope").unwrap();
    assert_error(&r, 404, "NOT_FOUND", "GET /nope");
    let r = e.http.request("DELETE", "/jobs", None).unwrap();
    assert_error(&r, 405, "METHOD_NOT_ALLOWED", "DELETE");
    assert_eq!(r.header("allow"), Some("GET"));
    let r = e.http.post(&jp(""), &json!({})).unwrap();
    assert_error(&r, 405, "METHOD_NOT_ALLOWED", "GET or PATCH");
    let r = e.http.get(&jp("/savepoints")).unwrap();
    assert_error(&r, 405, "METHOD_NOT_ALLOWED", "POST");

    let r = e
        .http
        .request("HEAD", "/jobs", None)
        .unwrap_or_else(|err| panic!("{err}"));
    assert_eq!(r.status, 200);

    let ui = e
        .http
        .exchange(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/html\r\nConnection: close\r\n\r\n")
        .unwrap();
    assert!(ui.header("content-type").unwrap().starts_with("text/html"));
    assert!(ui.text().contains("app.js"));
    let index = e
        .http
        .exchange(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/json\r\nConnection: close\r\n\r\n")
        .unwrap()
        .json();
    assert!(index["endpoints"].as_array().unwrap().len() >= 30);
}

#[test]
fn configuration() {
    let e = start();
    let d = e.http.get("/config").unwrap().json();
    assert_eq!(d["refresh-interval"], 3000);
    assert!(
        d["flink-version"].is_string() && d["features"]["web-cancel"] == true,
        "{d}"
    );
    let c = e.http.get("/jobmanager/config").unwrap().json();
    let entries = c.as_array().unwrap();
    let get = |k: &str| entries.iter().find(|x| x["key"] == k).map(|x| x["value"].clone());
    assert_eq!(get("parallelism.default"), Some(json!("3")));
    assert_eq!(get("rest.auth-token"), Some(json!("******")), "secrets are redacted");

    let j = e.http.get(&jp("/config")).unwrap().json();
    assert_eq!(j["jid"], JOB_ID);
    assert_eq!(j["execution-config"]["job-parallelism"], 3);
    assert!(j["execution-config"]["restart-strategy"].is_string());
    assert!(j["execution-config"].get("execution-mode").is_none());
    assert_eq!(j["execution-config"]["user-config"]["rest.auth-token"], "******");
}

#[test]
fn prometheus_metrics() {
    let e = start();
    let r = e.http.get("/metrics").unwrap();
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let text = r.text();
    for want in [
        "# TYPE cairn_source_records counter",
        &format!("cairn_source_records_total{{job_id=\"{JOB_ID}\",job_name=\"scripted job\"}} 42.0"),
        &format!("cairn_operator_records_in_total{{job_id=\"{JOB_ID}\",job_name=\"scripted job\",operator_uid=\"counter\",operator_id=\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\",operator_name=\"count per user\",subtask=\"2\"}} 12.0"),
        "cairn_backpressure_seconds_total{",
        "cairn_checkpoints_total{",
        "cairn_job_status{",
    ] {
        assert!(text.contains(want), "missing {want} in\n{text}");
    }
    // After a checkpoint, the last-checkpoint gauges appear.
    let id = e.http.post(&jp("/checkpoints"), &json!({})).unwrap().json()["request-id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_done(&e.http, &jp(&format!("/checkpoints/{id}")));
    let text = e.http.get("/metrics").unwrap().text();
    assert!(text.contains("cairn_last_checkpoint_size_bytes{"), "{text}");
    assert!(text.contains("cairn_checkpoint_duration_seconds_count{"), "{text}");
}

#[test]
fn savepoints_and_their_errors() {
    let e = start_with(None, Duration::from_millis(50));
    // Into an allowed extra directory, NATIVE, with our own trigger id.
    let r = e
        .http
        .post(
            &jp("/savepoints"),
            &json!({"target-directory": e.extra.join("sp").display().to_string(), "formatType": "NATIVE", "triggerId": "my-trigger-1", "cancel-job": false}),
        )
        .unwrap();
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.json()["request-id"], "my-trigger-1");
    let early = e.http.get(&jp("/savepoints/my-trigger-1")).unwrap().json();
    assert_eq!(early["status"]["id"], "IN_PROGRESS", "{early}");
    let v = wait_done(&e.http, &jp("/savepoints/my-trigger-1"));
    let loc = PathBuf::from(v["operation"]["location"].as_str().unwrap());
    assert!(loc.starts_with(e.extra.join("sp")), "{loc:?}");
    assert!(loc.join("_metadata").is_file());
    // The same trigger id again.
    let r = e
        .http
        .post(&jp("/savepoints"), &json!({"triggerId": "my-trigger-1"}))
        .unwrap();
    assert_error(&r, 409, "DUPLICATE_TRIGGER_ID", "my-trigger-1");

    // Into the default directory, with an empty body.
    let r = e.http.request("POST", &jp("/savepoints"), None).unwrap();
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.json()["request-id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 32);
    let v = wait_done(&e.http, &jp(&format!("/savepoints/{id}")));
    assert!(v["operation"]["location"]
        .as_str()
        .unwrap()
        .starts_with(&e.savepoints.display().to_string()));

    // A savepoint that fails reports its cause.
    let r = e
        .http
        .post(
            &jp("/savepoints"),
            &json!({"target-directory": e.extra.join("fail-here").display().to_string()}),
        )
        .unwrap();
    let id = r.json()["request-id"].as_str().unwrap().to_string();
    let v = wait_done(&e.http, &jp(&format!("/savepoints/{id}")));
    assert_eq!(v["status"]["id"], "COMPLETED");
    let cause = v["operation"]["failure-cause"]["stack-trace"].as_str().unwrap();
    assert!(cause.contains("cannot write savepoint"), "{v}");

    // Unknown trigger ids, and a checkpoint's trigger id asked as a savepoint.
    let r = e.http.get(&jp("/savepoints/nope")).unwrap();
    assert_error(&r, 404, "TRIGGER_NOT_FOUND", "nope");
    let cid = e.http.post(&jp("/checkpoints"), &json!({})).unwrap().json()["request-id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = e.http.get(&jp(&format!("/savepoints/{cid}"))).unwrap();
    assert_error(&r, 404, "TRIGGER_NOT_FOUND", "savepoint");

    // Bad requests.
    let extra = e.extra.display().to_string();
    let cases: Vec<(Value, u16, &str, &str)> = vec![
        (json!({"target-directory": "/etc"}), 403, "PATH_NOT_ALLOWED", "outside"),
        (
            json!({"target-directory": format!("{extra}/../escape")}),
            400,
            "PATH_TRAVERSAL",
            "..",
        ),
        (
            json!({"target-directory": "relative/dir"}),
            400,
            "INVALID_PATH",
            "not an absolute path",
        ),
        (
            json!({"target-directory": "s3://bucket/x"}),
            403,
            "PATH_NOT_ALLOWED",
            "outside",
        ),
        (
            json!({"target-directory": "s3://bucket/../x"}),
            400,
            "PATH_TRAVERSAL",
            "..",
        ),
        (json!({"target-directory": 5}), 400, "INVALID_FIELD", "must be a string"),
        (json!({"cancel-job": "yes"}), 400, "INVALID_FIELD", "cancel-job"),
        (
            json!({"formatType": "XML"}),
            400,
            "INVALID_FIELD",
            "CANONICAL or NATIVE",
        ),
        (json!({"triggerId": "../x"}), 400, "INVALID_FIELD", "triggerId"),
        (json!({"triggerId": 7}), 400, "INVALID_FIELD", "triggerId"),
        (
            json!({"targetDirectory": extra}),
            400,
            "UNKNOWN_FIELD",
            "target-directory",
        ),
        (json!([1, 2]), 400, "INVALID_JSON", "JSON object"),
    ];
    for (body, status, code, needle) in cases {
        let r = e.http.post(&jp("/savepoints"), &body).unwrap();
        assert_error(&r, status, code, needle);
    }
    let raw = format!(
        "POST {} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 9\r\n\r\n{{\"target-",
        jp("/savepoints")
    );
    let r = e.http.exchange(raw.as_bytes()).unwrap();
    assert_error(&r, 400, "INVALID_JSON", "not valid JSON");
    // Nothing was written outside the roots.
    assert!(!e.tmp.0.join("escape").exists());
}

#[test]
fn checkpoints_statistics_and_errors() {
    let e = start();
    let r = e.http.post(&jp("/checkpoints"), &json!({})).unwrap();
    assert_eq!(r.status, 202);
    let t1 = r.json()["request-id"].as_str().unwrap().to_string();
    let v = wait_done(&e.http, &jp(&format!("/checkpoints/{t1}")));
    assert_eq!(
        v,
        json!({"status": {"id": "COMPLETED"}, "operation": {"checkpointId": 1}})
    );
    let r = e
        .http
        .post(
            &jp("/checkpoints"),
            &json!({"checkpointType": "FULL", "triggerId": "full-1"}),
        )
        .unwrap();
    assert_eq!(r.json()["request-id"], "full-1");
    let v = wait_done(&e.http, &jp("/checkpoints/full-1"));
    assert_eq!(v["operation"]["checkpointId"], 2);
    assert!(e.checkpoints.join(JOB_ID).join("chk-2/_metadata").is_file());

    let s = e.http.get(&jp("/checkpoints")).unwrap().json();
    assert_eq!(s["counts"]["completed"], 2);
    assert_eq!(s["counts"]["total"], 2);
    assert_eq!(s["counts"]["failed"], 0);
    assert_eq!(s["latest"]["completed"]["id"], 2);
    assert_eq!(s["latest"]["completed"]["status"], "COMPLETED");
    assert_eq!(s["latest"]["completed"]["checkpoint_type"], "UNALIGNED_CHECKPOINT");
    assert_eq!(s["latest"]["completed"]["persisted_data"], 20);
    assert_eq!(s["history"][1]["checkpoint_type"], "CHECKPOINT");
    assert_eq!(s["history"][1]["persisted_data"], 0);
    assert_eq!(s["summary"]["persisted_data"]["max"], 20);
    assert_eq!(s["summary"]["persisted_data"]["min"], 0);
    assert!(s["latest"]["savepoint"].is_null());
    assert_eq!(s["history"][0]["id"], 2, "newest first");
    assert_eq!(s["history"][1]["id"], 1);
    assert_eq!(s["summary"]["state_size"]["min"], 100);
    assert_eq!(s["summary"]["state_size"]["max"], 200);
    assert_eq!(s["summary"]["state_size"]["avg"], 150);
    assert_eq!(s["summary"]["end_to_end_duration"]["max"], 7);

    let c = e.http.get(&jp("/checkpoints/config")).unwrap().json();
    assert_eq!(c["mode"], "EXACTLY_ONCE");
    assert_eq!(c["aligned_checkpoint_timeout"], 0);
    assert_eq!(c["state_changelog_enabled"], false);
    assert_eq!(c["interval"], 1000);
    assert_eq!(
        c["externalization"],
        json!({"enabled": true, "delete_on_cancellation": false})
    );
    assert!(c["checkpoint_storage"]
        .as_str()
        .unwrap()
        .contains(&e.checkpoints.display().to_string()));
    let extra = e.http.get(&jp("/cairn")).unwrap().json();
    assert_eq!(
        extra["checkpoint-config"]["checkpoint-dir"],
        e.checkpoints.display().to_string()
    );
    assert_eq!(extra["checkpoint-phases"][0]["id"], 2);
    assert_eq!(extra["checkpoint-phases"][0]["unaligned"], true);
    assert_eq!(extra["checkpoint-phases"][0]["persisted_data"], 20);
    assert_eq!(extra["checkpoint-phases"][1]["unaligned"], false);

    let d = e.http.get(&jp("/checkpoints/details/1")).unwrap().json();
    assert_eq!(d["id"], 1);
    assert_eq!(d["className"], "completed");
    assert_eq!(d["num_subtasks"], 3);
    assert!(d["external_path"].as_str().unwrap().ends_with("chk-1"));

    let r = e.http.get(&jp("/checkpoints/details/999")).unwrap();
    assert_error(&r, 404, "CHECKPOINT_NOT_FOUND", "999");
    let r = e.http.get(&jp("/checkpoints/details/abc")).unwrap();
    assert_error(&r, 400, "INVALID_CHECKPOINT_ID", "abc");
    let r = e.http.get(&jp("/checkpoints/unknown-trigger")).unwrap();
    assert_error(&r, 404, "TRIGGER_NOT_FOUND", "unknown-trigger");
    let r = e
        .http
        .post(&jp("/checkpoints"), &json!({"checkpointType": "INCREMENTAL"}))
        .unwrap();
    assert_error(&r, 400, "INVALID_FIELD", "INCREMENTAL");
    let r = e
        .http
        .post(&jp("/checkpoints"), &json!({"checkpointType": "bogus"}))
        .unwrap();
    assert_error(&r, 400, "INVALID_FIELD", "CONFIGURED or FULL");
    let r = e
        .http
        .post(&jp("/checkpoints"), &json!({"checkpointType": true}))
        .unwrap();
    assert_error(&r, 400, "INVALID_FIELD", "must be a string");
    let r = e.http.post(&jp("/checkpoints"), &json!({"full": true})).unwrap();
    assert_error(&r, 400, "UNKNOWN_FIELD", "checkpointType");
    let r = e
        .http
        .post(&jp("/checkpoints"), &json!({"triggerId": "full-1"}))
        .unwrap();
    assert_error(&r, 409, "DUPLICATE_TRIGGER_ID", "full-1");
}

#[test]
fn savepoint_disposal_and_its_errors() {
    let e = start();
    let r = e
        .http
        .post(
            &jp("/savepoints"),
            &json!({"target-directory": e.extra.display().to_string()}),
        )
        .unwrap();
    let id = r.json()["request-id"].as_str().unwrap().to_string();
    let v = wait_done(&e.http, &jp(&format!("/savepoints/{id}")));
    let sp = PathBuf::from(v["operation"]["location"].as_str().unwrap());
    assert!(sp.join("_metadata").is_file());

    // Refusals first; nothing is deleted by any of them.
    let chk_id = e.http.post(&jp("/checkpoints"), &json!({})).unwrap().json()["request-id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_done(&e.http, &jp(&format!("/checkpoints/{chk_id}")));
    let chk = e.checkpoints.join(JOB_ID).join("chk-2");
    assert!(chk.join("_metadata").is_file());
    let plain = e.extra.join("plain-file");
    std::fs::write(&plain, b"x").unwrap();
    let empty_dir = e.extra.join("not-a-savepoint");
    std::fs::create_dir_all(empty_dir.join("sub")).unwrap();
    let outside = e.tmp.0.join("outside-sp");
    write_snapshot(&outside, JOB_ID, 9, true);
    let s = |p: &PathBuf| p.display().to_string();
    let cases: Vec<(Value, u16, &str, &str)> = vec![
        (json!({}), 400, "MISSING_FIELD", "savepoint-path"),
        (json!({"savepoint-path": 1}), 400, "INVALID_FIELD", "must be a string"),
        (json!({"savepointPath": s(&sp)}), 400, "UNKNOWN_FIELD", "savepoint-path"),
        (
            json!({"savepoint-path": s(&outside)}),
            403,
            "PATH_NOT_ALLOWED",
            "outside",
        ),
        (
            json!({"savepoint-path": format!("{}/../outside-sp", s(&e.extra))}),
            400,
            "PATH_TRAVERSAL",
            "..",
        ),
        (json!({"savepoint-path": "outside-sp"}), 400, "INVALID_PATH", "absolute"),
        (
            json!({"savepoint-path": s(&e.extra.join("missing"))}),
            404,
            "PATH_NOT_FOUND",
            "does not exist",
        ),
        (
            json!({"savepoint-path": s(&chk)}),
            400,
            "NOT_A_SAVEPOINT",
            "only savepoints",
        ),
        (
            json!({"savepoint-path": s(&e.extra)}),
            400,
            "NOT_A_SAVEPOINT",
            "configured directory",
        ),
        (
            json!({"savepoint-path": s(&plain)}),
            400,
            "NOT_A_SAVEPOINT",
            "it is a file",
        ),
        (
            json!({"savepoint-path": s(&sp.join("_metadata"))}),
            400,
            "NOT_A_SAVEPOINT",
            "_metadata",
        ),
        (
            json!({"savepoint-path": s(&empty_dir)}),
            400,
            "NOT_A_SAVEPOINT",
            "no '_metadata'",
        ),
    ];
    for (body, status, code, needle) in cases {
        let r = e.http.post("/savepoint-disposal", &body).unwrap();
        assert_error(&r, status, code, needle);
    }
    assert!(chk.join("_metadata").is_file());
    assert!(plain.is_file() && empty_dir.join("sub").is_dir() && outside.join("_metadata").is_file());

    let r = e
        .http
        .post(
            "/savepoint-disposal",
            &json!({"savepoint-path": format!("file://{}", s(&sp))}),
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let t = r.json()["request-id"].as_str().unwrap().to_string();
    let v = e.http.get(&format!("/savepoint-disposal/{t}")).unwrap().json();
    assert_eq!(v, json!({"status": {"id": "COMPLETED"}, "operation": {}}));
    assert!(!sp.exists());
    assert!(e.extra.is_dir());
    let r = e.http.get("/savepoint-disposal/nope").unwrap();
    assert_error(&r, 404, "TRIGGER_NOT_FOUND", "nope");
    let r = e.http.get("/savepoint-disposal").unwrap();
    assert_error(&r, 405, "METHOD_NOT_ALLOWED", "POST");
}

#[test]
fn stop_with_savepoint_ends_the_job() {
    let e = start();
    let r = e.http.post(&jp("/stop"), &json!({"drain": "yes"})).unwrap();
    assert_error(&r, 400, "INVALID_FIELD", "drain");
    let r = e.http.post(&jp("/stop"), &json!({"target-directory": "/x"})).unwrap();
    assert_error(&r, 400, "UNKNOWN_FIELD", "targetDirectory");
    let r = e.http.post(&jp("/stop"), &json!({"targetDirectory": "/etc"})).unwrap();
    assert_error(&r, 403, "PATH_NOT_ALLOWED", "/etc");

    let r = e
        .http
        .post(
            &jp("/stop"),
            &json!({"targetDirectory": e.extra.display().to_string(), "drain": true, "formatType": "CANONICAL"}),
        )
        .unwrap();
    assert_eq!(r.status, 202, "{}", r.text());
    let id = r.json()["request-id"].as_str().unwrap().to_string();
    let v = wait_done(&e.http, &jp(&format!("/savepoints/{id}")));
    assert!(PathBuf::from(v["operation"]["location"].as_str().unwrap())
        .join("_metadata")
        .is_file());
    let deadline = Instant::now() + Duration::from_secs(5);
    while state(&e.http) != "FINISHED" {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
    let d = e.http.get(&jp("")).unwrap().json();
    assert!(d["end-time"].as_i64().unwrap() > 0);
    // The job no longer takes requests that need it running.
    let r = e.http.post(&jp("/savepoints"), &json!({})).unwrap();
    assert_error(&r, 409, "JOB_NOT_RUNNING", "Finished");
    let r = e.http.post(&jp("/checkpoints"), &json!({})).unwrap();
    assert_error(&r, 409, "JOB_NOT_RUNNING", "not running");
    let r = e.http.patch(&jp("?mode=cancel")).unwrap();
    assert_error(&r, 409, "JOB_NOT_RUNNING", "not running");
}

#[test]
fn cancel_and_cancel_with_savepoint() {
    let e = start();
    let r = e.http.patch(&jp("?mode=stop")).unwrap();
    assert_error(&r, 400, "INVALID_PARAMETER", "POST /jobs/:jobid/stop");
    let r = e.http.patch(&jp("?mode=explode")).unwrap();
    assert_error(&r, 400, "INVALID_PARAMETER", "explode");
    let r = e
        .http
        .patch("/jobs/ffffffffffffffffffffffffffffffff?mode=cancel")
        .unwrap();
    assert_error(&r, 404, "JOB_NOT_FOUND", "ffff");
    let r = e.http.patch(&jp("?mode=cancel")).unwrap();
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(r.json(), json!({}));
    let deadline = Instant::now() + Duration::from_secs(5);
    while state(&e.http) != "CANCELED" {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(e.http.get("/jobs").unwrap().json()["jobs"][0]["status"], "CANCELED");

    let e = start();
    let r = e.http.post(&jp("/savepoints"), &json!({"cancel-job": true})).unwrap();
    let id = r.json()["request-id"].as_str().unwrap().to_string();
    let v = wait_done(&e.http, &jp(&format!("/savepoints/{id}")));
    assert!(v["operation"]["location"].as_str().is_some(), "{v}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while state(&e.http) != "CANCELED" {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn token_protects_mutating_calls() {
    let e = start_with(Some("s3cret"), Duration::ZERO);
    let anonymous = HttpClient::new(e.server.address().to_string());
    let r = anonymous.post(&jp("/checkpoints"), &json!({})).unwrap();
    assert_error(&r, 401, "UNAUTHORIZED", "Authorization: Bearer");
    assert!(r.header("www-authenticate").unwrap().starts_with("Bearer"));
    let wrong = anonymous.clone().with_token(Some("guess".into()));
    assert_error(&wrong.patch(&jp("?mode=cancel")).unwrap(), 401, "UNAUTHORIZED", "wrong");
    assert_error(
        &wrong.post("/savepoint-disposal", &json!({})).unwrap(),
        401,
        "UNAUTHORIZED",
        "wrong",
    );
    let raw = format!(
        "POST {} HTTP/1.1\r\nAuthorization: Basic czNjcmV0\r\nContent-Length: 0\r\n\r\n",
        jp("/stop")
    );
    assert_error(
        &anonymous.exchange(raw.as_bytes()).unwrap(),
        401,
        "UNAUTHORIZED",
        "Bearer <token>",
    );
    // Reads need no token.
    assert_eq!(anonymous.get(&jp("")).unwrap().status, 200);
    assert_eq!(anonymous.get("/metrics").unwrap().status, 200);
    // The right token works.
    assert_eq!(e.http.post(&jp("/checkpoints"), &json!({})).unwrap().status, 202);
    assert_eq!(state(&e.http), "RUNNING");
}

#[test]
fn non_loopback_needs_a_token() {
    let job = Scripted::start(ScriptConfig {
        checkpoint_dir: None,
        savepoint_dir: None,
        fail_marker: "x",
        delay: Duration::ZERO,
    });
    let mut config = Configuration::new();
    config.set("rest.port", "0").unwrap();
    config.set("rest.bind-address", "0.0.0.0").unwrap();
    let opts = || ServeOptions {
        registry: None,
        linger: Duration::ZERO,
        ..Default::default()
    };
    if std::env::var_os("CAIRN_REST_TOKEN").is_none() {
        match serve_with(job.client.clone(), &config, opts()) {
            Err(RestError::Config(m)) => assert!(m.contains("not a loopback address"), "{m}"),
            other => panic!("expected a configuration error, got {other:?}"),
        }
    }
    config.set("rest.auth.token", "tok").unwrap();
    let tmp = TempDir::new("nl");
    let server = serve_with(
        job.client.clone(),
        &config,
        ServeOptions {
            registry: Some(Registry::new(tmp.path())),
            ..opts()
        },
    )
    .unwrap();
    assert!(server.address().ip().is_unspecified());
    let entry = &Registry::new(tmp.path()).list()[0];
    assert_eq!(entry.address, "127.0.0.1", "local clients use loopback");
    let http = HttpClient::new(entry.authority());
    assert_eq!(http.get("/jobs").unwrap().status, 200);
    assert_eq!(http.post(&jp("/checkpoints"), &json!({})).unwrap().status, 401);
}

#[test]
fn raw_protocol_errors_never_hurt_the_server() {
    let e = start();
    let addr = e.server.address();
    let status_of = |raw: &[u8]| -> (u16, Value) {
        let out = send_raw(addr, raw).unwrap();
        let r = cairn_rest_client::client::read_response(std::io::Cursor::new(out)).unwrap();
        (r.status, r.json())
    };
    let code = |v: &Value| v.as_object().map(|_| ()).is_some();
    let (s, _) = status_of(b"GARBAGE\r\n\r\n");
    assert_eq!(s, 400);
    let (s, _) = status_of(b"GET /jobs HTTP/2.0\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    assert_eq!(s, 400);
    // Chunked bodies are read like any other.
    let (s, v) = status_of(
        b"POST /savepoint-disposal HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"sa\r\n4\r\nvep\"\r\n0\r\n\r\n",
    );
    assert_eq!(s, 400, "{v}");
    assert!(v["errors"][0].as_str().unwrap().contains("not valid JSON"), "{v}");
    let (s, v) = status_of(b"POST /savepoint-disposal HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: 99999999\r\n\r\n{}");
    assert_eq!(s, 413);
    assert!(code(&v));
    let (s, _) = status_of(b"GET /jobs/%zz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    assert_eq!(s, 400);
    // A big body that is refused is still answered.
    let mut big =
        b"POST /savepoint-disposal HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: 2000000\r\n\r\n"
            .to_vec();
    big.extend(std::iter::repeat_n(b'x', 2_000_000));
    let (s, _) = status_of(&big);
    assert_eq!(s, 413);
    // Empty connections are closed silently.
    let mut empty = std::net::TcpStream::connect(addr).unwrap();
    empty.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = Vec::new();
    std::io::Read::read_to_end(&mut empty, &mut answer).unwrap();
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    // A client that connects and says nothing does not block others.
    let idle = std::net::TcpStream::connect(addr).unwrap();
    let start = Instant::now();
    assert_eq!(e.http.get("/jobs").unwrap().status, 200);
    assert!(start.elapsed() < Duration::from_secs(2));
    drop(idle);
    assert_eq!(state(&e.http), "RUNNING");
}

#[test]
fn registry_entry_lives_as_long_as_the_server() {
    let mut e = start();
    let registry = Registry::new(e.tmp.0.join("home"));
    let entries = registry.list();
    assert_eq!(entries.len(), 1);
    let entry = &entries[0];
    assert_eq!(entry.jid, JOB_ID);
    assert_eq!(entry.name, "scripted job");
    assert_eq!(entry.pid, std::process::id());
    assert_eq!(entry.port, e.server.address().port());
    assert_eq!(registry.resolve("c0ff").unwrap().jid, JOB_ID);
    let addr = e.server.address();
    e.server.shutdown();
    assert!(registry.list().is_empty());
    assert!(std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err());
    e.server.shutdown(); // idempotent
}

#[test]
fn shutdown_lingers_until_the_stop_outcome_is_read() {
    let mut e = start();
    let r = e
        .http
        .post(&jp("/stop"), &json!({"targetDirectory": e.extra.display().to_string()}))
        .unwrap();
    let id = r.json()["request-id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !e.job.client.info().status.is_terminal() {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(5));
    }
    // The job ended; a client reads the outcome while the server shuts down.
    let http = e.http.clone();
    let path = jp(&format!("/savepoints/{id}"));
    let reader = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        http.get(&path).unwrap().json()
    });
    let start = Instant::now();
    e.server.shutdown();
    let waited = start.elapsed();
    let v = reader.join().unwrap();
    assert_eq!(v["status"]["id"], "COMPLETED", "{v}");
    assert!(waited >= Duration::from_millis(250), "{waited:?}");
    assert!(waited < Duration::from_secs(3), "{waited:?}");
}

#[test]
fn busy_ports() {
    let job = Scripted::start(ScriptConfig {
        checkpoint_dir: None,
        savepoint_dir: None,
        fail_marker: "x",
        delay: Duration::ZERO,
    });
    let opts = || ServeOptions {
        registry: None,
        linger: Duration::ZERO,
        ..Default::default()
    };
    // Above 8180 there is no fallback.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    if port > 8180 {
        let mut config = Configuration::new();
        config.set("rest.port", &port.to_string()).unwrap();
        match serve_with(job.client.clone(), &config, opts()) {
            Err(RestError::Bind(m)) => assert!(m.contains("in use"), "{m}"),
            other => panic!("expected a bind error, got {other:?}"),
        }
    }
    // In 8081..=8180 the next free port is taken.
    for p in 8081..8170u16 {
        let Ok(held) = TcpListener::bind(("127.0.0.1", p)) else {
            continue;
        };
        let mut config = Configuration::new();
        config.set("rest.port", &p.to_string()).unwrap();
        let server = serve_with(job.client.clone(), &config, opts()).unwrap();
        let got = server.address().port();
        assert!(got > p && got <= 8180, "{got}");
        drop(held);
        return;
    }
}

//! The REST API in front of real jobs (`StreamEnv::execute_async`): the
//! engine's answers for checkpoints, savepoints, stop, cancel, metrics and
//! its own refusals.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use cairn::prelude::*;
use cairn_rest_client::{HttpClient, Registry};
use cairn_rest_server::{serve_with, RestServer, ServeOptions};
use common::TempDir;
use serde_json::{json, Value};

fn start_job(tmp: &TempDir, with_savepoint_dir: bool) -> (JobHandle, RestServer, HttpClient, String) {
    let env = StreamEnv::new();
    env.set_config("execution.checkpointing.interval", "100 ms").unwrap();
    env.set_config(
        "execution.checkpointing.dir",
        &tmp.path().join("chk").display().to_string(),
    )
    .unwrap();
    if with_savepoint_dir {
        env.set_config(
            "execution.checkpointing.savepoint-dir",
            &tmp.path().join("sp").display().to_string(),
        )
        .unwrap();
    }
    env.set_config("rest.allowed-paths", &tmp.path().join("extra").display().to_string())
        .unwrap();
    env.set_parallelism(2).unwrap();
    env.source(GeneratorSource::new(1 << 40, 8).rate(2_000))
        .uid("events")
        .key_by(|e: &GeneratedEvent| e.key)
        .reduce(|a, b| if a.value > b.value { a } else { b })
        .uid("max-per-key")
        .sink(DiscardSink)
        .uid("discard");
    let handle = env.execute_async("rest real job").unwrap();
    let server = serve_with(
        handle.client(),
        &env.config(),
        ServeOptions {
            registry: Some(Registry::new(tmp.path().join("home"))),
            linger: Duration::from_secs(2),
            ..Default::default()
        },
    )
    .unwrap();
    let http = HttpClient::new(server.address().to_string());
    let jid = handle.job_id().to_string();
    (handle, server, http, jid)
}

fn wait_done(http: &HttpClient, path: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = http.get(path).unwrap().json();
        if v["status"]["id"] != "IN_PROGRESS" {
            return v;
        }
        assert!(Instant::now() < deadline, "{path} still in progress");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_state(http: &HttpClient, jid: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = http.get(&format!("/jobs/{jid}")).unwrap().json();
        if v["state"] == want {
            return;
        }
        assert!(Instant::now() < deadline, "job is {} not {want}", v["state"]);
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn checkpoints_savepoints_and_stop_on_a_real_job() {
    let tmp = TempDir::new("real");
    let (handle, mut server, http, jid) = start_job(&tmp, true);
    let j = |rest: &str| format!("/jobs/{jid}{rest}");
    wait_state(&http, &jid, "RUNNING");

    let d = http.get(&j("")).unwrap().json();
    assert_eq!(d["name"], "rest real job");
    let c = http.get(&j("/cairn")).unwrap().json();
    let uids: Vec<&str> = c["operators"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["uid"].as_str().unwrap())
        .collect();
    assert_eq!(uids, ["events", "max-per-key", "discard"]);
    assert_eq!(d["vertices"][1]["parallelism"], 2);
    let reg = Registry::new(tmp.path().join("home")).list();
    assert_eq!(reg[0].jid, jid);

    // Records flow and are counted per operator and subtask (the job-wide
    // records-in counter used to stay at 0).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = http.get("/metrics").unwrap().text();
        let value = |prefix: &str| -> f64 {
            text.lines()
                .filter(|l| l.starts_with(prefix))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        };
        let job_in = value("cairn_records_in_total{");
        let keyed_in: f64 = text
            .lines()
            .filter(|l| l.starts_with("cairn_operator_records_in_total{") && l.contains("operator_uid=\"max-per-key\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        if job_in > 0.0 && keyed_in > 0.0 {
            assert!(text.contains("operator_uid=\"max-per-key\",operator_id="), "{text}");
            assert!(text.contains("subtask=\"1\""), "{text}");
            break;
        }
        assert!(Instant::now() < deadline, "records are not counted:\n{text}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let c = http.get(&j("/cairn")).unwrap().json();
    let keyed = c["operators"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["uid"] == "max-per-key")
        .unwrap()
        .clone();
    assert!(keyed["records-in"].as_f64().unwrap() > 0.0, "{keyed}");
    assert_eq!(keyed["subtasks"].as_array().unwrap().len(), 2);

    // A manual checkpoint.
    let r = http
        .post(&j("/checkpoints"), &json!({"checkpointType": "FULL"}))
        .unwrap();
    assert_eq!(r.status, 202, "{}", r.text());
    let t = r.json()["request-id"].as_str().unwrap().to_string();
    let v = wait_done(&http, &j(&format!("/checkpoints/{t}")));
    let n = v["operation"]["checkpointId"].as_u64().unwrap_or_else(|| panic!("{v}"));
    // Statistics are published by the control loop shortly after.
    let deadline = Instant::now() + Duration::from_secs(10);
    let stats = loop {
        let stats = http.get(&j("/checkpoints")).unwrap().json();
        if stats["counts"]["completed"].as_u64().unwrap() >= 1 {
            break stats;
        }
        assert!(Instant::now() < deadline, "{stats}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(stats["latest"]["completed"]["id"].as_u64().unwrap() >= n);
    assert!(stats["summary"]["end_to_end_duration"]["max"].as_u64().is_some());
    let latest = stats["latest"]["completed"]["id"].as_u64().unwrap();
    let details = http.get(&j(&format!("/checkpoints/details/{latest}"))).unwrap();
    assert_eq!(details.status, 200, "{}", details.text());
    assert_eq!(details.json()["status"], "COMPLETED");
    let cfg = http.get(&j("/checkpoints/config")).unwrap().json();
    assert_eq!(cfg["interval"], 100);
    assert_eq!(cfg["mode"], "EXACTLY_ONCE");

    // Metrics move.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = http.get("/metrics").unwrap().text();
        let line = text
            .lines()
            .find(|l| l.starts_with("cairn_source_records_total{"))
            .unwrap()
            .to_string();
        if !line.ends_with(" 0") {
            assert!(text.contains("cairn_checkpoints_total{"), "{text}");
            break;
        }
        assert!(Instant::now() < deadline, "{text}");
        std::thread::sleep(Duration::from_millis(50));
    }

    // A savepoint into an allowed directory; then disposed of.
    let extra = tmp.path().join("extra");
    let r = http
        .post(
            &j("/savepoints"),
            &json!({"target-directory": extra.display().to_string(), "formatType": "NATIVE"}),
        )
        .unwrap();
    assert_eq!(r.status, 202, "{}", r.text());
    let t = r.json()["request-id"].as_str().unwrap().to_string();
    let v = wait_done(&http, &j(&format!("/savepoints/{t}")));
    let sp = PathBuf::from(v["operation"]["location"].as_str().unwrap_or_else(|| panic!("{v}")));
    assert!(sp.starts_with(&extra) && sp.join("_metadata").is_file(), "{v}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let cps = loop {
        let cps = http.get(&j("/checkpoints")).unwrap().json();
        if cps["latest"]["savepoint"]["is_savepoint"] == true {
            break cps;
        }
        assert!(Instant::now() < deadline, "{cps}");
        std::thread::sleep(Duration::from_millis(20));
    };
    // A retained checkpoint is not a savepoint: disposal refuses it.
    let chk_dir = PathBuf::from(
        cps["latest"]["completed"]["external_path"]
            .as_str()
            .unwrap_or_else(|| panic!("{cps}")),
    );
    let r = http
        .post(
            "/savepoint-disposal",
            &json!({"savepoint-path": chk_dir.display().to_string()}),
        )
        .unwrap();
    assert!(r.status == 400 || r.status == 404, "{}", r.text());
    let r = http
        .post(
            "/savepoint-disposal",
            &json!({"savepoint-path": sp.display().to_string()}),
        )
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(!sp.exists());

    // Stop with a savepoint: the job finishes, the handle reports the savepoint.
    let r = http
        .post(&j("/stop"), &json!({"drain": false, "formatType": "NATIVE"}))
        .unwrap();
    assert_eq!(r.status, 202, "{}", r.text());
    let t = r.json()["request-id"].as_str().unwrap().to_string();
    let v = wait_done(&http, &j(&format!("/savepoints/{t}")));
    let stop_sp = PathBuf::from(v["operation"]["location"].as_str().unwrap_or_else(|| panic!("{v}")));
    assert!(stop_sp.starts_with(tmp.path().join("sp")));
    let result = handle.wait().unwrap();
    assert_eq!(result.savepoint.as_deref(), Some(stop_sp.as_path()));
    wait_state(&http, &jid, "FINISHED");
    let r = http.post(&j("/checkpoints"), &json!({})).unwrap();
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(r.error_code(), Some("JOB_NOT_RUNNING"));
    server.shutdown();
    assert!(Registry::new(tmp.path().join("home")).list().is_empty());
}

#[test]
fn cancel_and_refusals_on_a_real_job() {
    let tmp = TempDir::new("real-cancel");
    let (handle, _server, http, jid) = start_job(&tmp, false);
    let j = |rest: &str| format!("/jobs/{jid}{rest}");
    wait_state(&http, &jid, "RUNNING");
    // No savepoint directory configured and none given.
    let r = http.post(&j("/savepoints"), &json!({})).unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.error_code(), Some("BAD_REQUEST"));
    assert!(r.json()["errors"][0].as_str().unwrap().contains("savepoint-dir"));
    let r = http.post(&j("/stop"), &json!({})).unwrap();
    assert_eq!(r.status, 400, "{}", r.text());
    // Cancel.
    let r = http.patch(&j("?mode=cancel")).unwrap();
    assert_eq!(r.status, 202, "{}", r.text());
    assert!(handle.wait().is_err(), "a cancelled job's wait is an error");
    wait_state(&http, &jid, "CANCELED");
    let r = http.patch(&j("?mode=cancel")).unwrap();
    assert_eq!(r.status, 409, "{}", r.text());
}

//! Flink's own tools can drive Cairn.
//!
//! 1. Every response of the Flink endpoints Cairn serves validates against
//!    Flink's published REST OpenAPI specification (the vendored excerpt in
//!    `tests/data/`), strictly where Flink's Java client would reject an
//!    unknown field.
//! 2. Flink 2.3's `RestClusterClient` (from `flink-clients` on Maven
//!    Central, run on Java 17) lists jobs, reads details and status,
//!    triggers and polls a savepoint and a checkpoint, stops with a
//!    savepoint, cancels, reads the job result, disposes of a savepoint, and
//!    gets Flink's error for an unknown job — against real job processes.
//!
//! Part 2 needs `javac`/`java` and the client's classpath in
//! `$CAIRN_FLINK_CLASSPATH` (a file holding it, as `mvn
//! dependency:build-classpath` writes it; `.ci/services/flink-client.sh` fetches it into its
//! cache). `CAIRN_REQUIRE_FLINK_CLIENT=1` (set by `.ci/test`) makes a missing
//! piece a failure; elsewhere it is skipped with a message.

mod common;
mod openapi;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cairn_rest_client::HttpClient;
use common::{example, Home};
use serde_json::{json, Value};

const SPEC: &str = include_str!("data/flink-rest-v1-dispatcher-schemas.yml");

fn after<'a>(out: &'a str, prefix: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.trim_start().strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in\n{out}"))
        .trim()
}

struct Job {
    jid: String,
    port: u16,
    http: HttpClient,
}

fn start_job(h: &Home, tag: &str) -> Job {
    let s = |p: &Path| p.display().to_string();
    let o = h.expect(
        0,
        &[
            "run",
            "-p",
            "2",
            "-D",
            "rest.port=0",
            "-D",
            "execution.checkpointing.interval=300ms",
            "-D",
            &format!("execution.checkpointing.dir={}", s(&h.path("checkpoints"))),
            "-D",
            &format!("execution.checkpointing.savepoint-dir={}", s(&h.path("savepoints"))),
            "--",
            &s(&example("cli_demo_job")),
            &s(&h.path(&format!("out-{tag}"))),
            "300",
            "4",
        ],
    );
    let jid = after(&o, "Job has been submitted with JobID ").to_string();
    let entry: Value =
        serde_json::from_slice(&std::fs::read(h.path(&format!("home/jobs/{jid}.json"))).unwrap()).unwrap();
    let port = entry["port"].as_u64().unwrap() as u16;
    let http = HttpClient::new(format!("127.0.0.1:{port}")).with_timeout(Duration::from_secs(30));
    let job = Job { jid, port, http };
    wait_until("two completed checkpoints", || {
        job.http
            .get(&format!("/jobs/{}/checkpoints", job.jid))
            .ok()
            .and_then(|r| r.json()["counts"]["completed"].as_u64())
            .unwrap_or(0)
            >= 2
    });
    job
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How a response is checked.
enum Shape {
    /// Against a schema (strictly: no unknown fields).
    Schema(&'static str, bool),
    /// An array of the schema's items. Flink's `MetricCollectionResponseBody`
    /// and `AggregatedMetricsResponseBody` have serializers that write the
    /// list itself; the generated file calls them objects.
    ArrayOf(&'static str),
    /// Aggregated metrics: `[{"id", "min"|"max"|"avg"|"sum"|"skew": number}]`.
    Aggregated,
}

fn check(
    spec: &openapi::Spec,
    what: &str,
    status: u16,
    want_status: u16,
    body: &Value,
    shape: Shape,
    errors: &mut Vec<String>,
) {
    if status != want_status {
        errors.push(format!("{what}: HTTP {status}, want {want_status}: {body}"));
        return;
    }
    let found = match shape {
        Shape::Schema(name, strict) => spec.validate(name, body, strict),
        Shape::ArrayOf(name) => match body.as_array() {
            Some(items) if !items.is_empty() => items.iter().flat_map(|i| spec.validate(name, i, true)).collect(),
            _ => vec![format!("expected a non-empty array: {body}")],
        },
        Shape::Aggregated => match body.as_array() {
            Some(items) if !items.is_empty() => items
                .iter()
                .filter(|i| {
                    !(i["id"].is_string()
                        && i.as_object().is_some_and(|o| {
                            o.iter().all(|(k, v)| {
                                k == "id"
                                    || (["min", "max", "avg", "sum", "skew"].contains(&k.as_str()) && v.is_number())
                            })
                        }))
                })
                .map(|i| format!("not an aggregated metric: {i}"))
                .collect(),
            _ => vec![format!("expected a non-empty array: {body}")],
        },
    };
    errors.extend(found.into_iter().map(|e| format!("{what}: {e}")));
}

/// Every Flink endpoint Cairn serves, against the specification. The
/// (method, path) → schema table follows the `paths` of
/// `rest_v1_dispatcher.yml`.
fn validate_endpoints(spec: &openapi::Spec, job: &Job, errors: &mut Vec<String>) {
    let j = &job.jid;
    let get = |p: &str| {
        let r = job.http.get(p).unwrap_or_else(|e| panic!("GET {p}: {e}"));
        (r.status, r.json())
    };
    let details = get(&format!("/jobs/{j}")).1;
    let vertex = details["vertices"][1]["id"].as_str().unwrap().to_string();
    let cp = get(&format!("/jobs/{j}/checkpoints")).1["latest"]["completed"]["id"]
        .as_u64()
        .unwrap();
    let table: Vec<(String, Shape)> = vec![
        ("/config".into(), Shape::Schema("DashboardConfiguration", true)),
        ("/overview".into(), Shape::Schema("ClusterOverviewWithVersion", true)),
        ("/jobmanager/config".into(), Shape::ArrayOf("ConfigurationInfoEntry")),
        ("/jobs".into(), Shape::Schema("JobIdsWithStatusOverview", true)),
        ("/jobs/overview".into(), Shape::Schema("MultipleJobsDetails", true)),
        ("/jobs/metrics?get=numRestarts,uptime".into(), Shape::Aggregated),
        (format!("/jobs/{j}"), Shape::Schema("JobDetailsInfo", true)),
        (format!("/jobs/{j}/status"), Shape::Schema("JobStatusInfo", true)),
        (
            format!("/jobs/{j}/execution-result"),
            Shape::Schema("JobExecutionResultResponseBody", true),
        ),
        (
            format!("/jobs/{j}/exceptions"),
            Shape::Schema("JobExceptionsInfoWithHistory", true),
        ),
        (format!("/jobs/{j}/plan"), Shape::Schema("JobPlanInfo", true)),
        // Flink writes JobConfigInfo with its own serializer (jid, name,
        // execution-config); the generated names differ, so not strict.
        (format!("/jobs/{j}/config"), Shape::Schema("JobConfigInfo", false)),
        (format!("/jobs/{j}/metrics"), Shape::ArrayOf("Metric")),
        (format!("/jobs/{j}/metrics?get=numRestarts"), Shape::ArrayOf("Metric")),
        (
            format!("/jobs/{j}/checkpoints"),
            Shape::Schema("CheckpointingStatistics", true),
        ),
        (
            format!("/jobs/{j}/checkpoints/config"),
            Shape::Schema("CheckpointConfigInfo", true),
        ),
        (
            format!("/jobs/{j}/checkpoints/details/{cp}"),
            Shape::Schema("CheckpointStatistics", true),
        ),
        (
            format!("/jobs/{j}/vertices/{vertex}"),
            Shape::Schema("JobVertexDetailsInfo", true),
        ),
        (
            format!("/jobs/{j}/vertices/{vertex}/metrics?get=0.numRecordsIn,1.numRecordsInPerSecond"),
            Shape::ArrayOf("Metric"),
        ),
        (
            format!("/jobs/{j}/vertices/{vertex}/subtasks/metrics?get=numRecordsIn&agg=min,max,sum,avg"),
            Shape::Aggregated,
        ),
        (
            format!("/jobs/{j}/vertices/{vertex}/subtasks/1/metrics?get=busyTimeMsPerSecond"),
            Shape::ArrayOf("Metric"),
        ),
        (
            format!("/jobs/{j}/vertices/{vertex}/watermarks"),
            Shape::ArrayOf("Metric"),
        ),
        (
            format!("/jobs/{j}/vertices/{vertex}/backpressure"),
            Shape::Schema("JobVertexBackPressureInfo", true),
        ),
    ];
    for (path, shape) in table {
        let (status, mut body) = get(&path);
        // Fields Flink added after the generated file (2.0-SNAPSHOT) that
        // Flink 2.3's client requires.
        for (holder, field) in [("jobs", "pending-operators")]
            .into_iter()
            .filter(|_| path == "/jobs/overview")
        {
            for j in body.get_mut(holder).and_then(Value::as_array_mut).into_iter().flatten() {
                match j.as_object_mut().and_then(|o| o.remove(field)) {
                    Some(v) if v.is_u64() => {}
                    other => errors.push(format!("GET {path}: {field} {other:?} is not a count")),
                }
            }
        }
        if body.get("vertices").is_some() {
            match body.as_object_mut().and_then(|o| o.remove("pending-operators")) {
                Some(v) if v.is_u64() => {}
                other => errors.push(format!("GET {path}: pending-operators {other:?} is not a count")),
            }
        }
        // The generator calls slotSharingGroupId an object; Flink's own
        // serializer writes (and its client reads) a 32-hex-digit string.
        if let Some(vs) = body.get_mut("vertices").and_then(Value::as_array_mut) {
            for v in vs {
                if let Some(o) = v.as_object_mut() {
                    match o.remove("slotSharingGroupId") {
                        Some(Value::String(s)) if s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit()) => {}
                        other => errors.push(format!("GET {path}: slotSharingGroupId {other:?} is not 32 hex digits")),
                    }
                }
            }
        }
        check(spec, &format!("GET {path}"), status, 200, &body, shape, errors);
    }
    // Triggers and their status, savepoint disposal.
    let post = |p: &str, b: Value| {
        let r = job.http.post(p, &b).unwrap();
        (r.status, r.json())
    };
    let (s, t) = post(&format!("/jobs/{j}/savepoints"), json!({"cancel-job": false}));
    check(
        spec,
        "POST savepoints",
        s,
        202,
        &t,
        Shape::Schema("TriggerResponse", true),
        errors,
    );
    let id = t["request-id"].as_str().unwrap_or_default().to_string();
    let path = format!("/jobs/{j}/savepoints/{id}");
    let (s, first) = get(&path);
    check(
        spec,
        "GET savepoint status",
        s,
        200,
        &first,
        Shape::Schema("AsynchronousOperationResult", true),
        errors,
    );
    let mut done = first;
    wait_until("the savepoint", || {
        done = get(&path).1;
        done["status"]["id"] == "COMPLETED"
    });
    check(
        spec,
        "GET savepoint status (completed)",
        200,
        200,
        &done,
        Shape::Schema("AsynchronousOperationResult", true),
        errors,
    );
    let location = done["operation"]["location"].as_str().unwrap_or_default().to_string();
    let (s, t) = post(&format!("/jobs/{j}/checkpoints"), json!({"checkpointType": "FULL"}));
    check(
        spec,
        "POST checkpoints",
        s,
        202,
        &t,
        Shape::Schema("TriggerResponse", true),
        errors,
    );
    let cpath = format!("/jobs/{j}/checkpoints/{}", t["request-id"].as_str().unwrap_or_default());
    let mut cdone = Value::Null;
    wait_until("the checkpoint", || {
        cdone = get(&cpath).1;
        cdone["status"]["id"] == "COMPLETED"
    });
    check(
        spec,
        "GET checkpoint status",
        200,
        200,
        &cdone,
        Shape::Schema("AsynchronousOperationResult", true),
        errors,
    );
    let (s, t) = post("/savepoint-disposal", json!({"savepoint-path": location}));
    check(
        spec,
        "POST savepoint-disposal",
        s,
        200,
        &t,
        Shape::Schema("TriggerResponse", true),
        errors,
    );
    let (s, d) = get(&format!(
        "/savepoint-disposal/{}",
        t["request-id"].as_str().unwrap_or_default()
    ));
    check(
        spec,
        "GET savepoint-disposal status",
        s,
        200,
        &d,
        Shape::Schema("AsynchronousOperationResult", true),
        errors,
    );
    // Errors: Flink's shape only.
    let (s, e) = get("/jobs/0123456789abcdef0123456789abcdef");
    if s != 404
        || e.as_object().map(|o| o.keys().collect::<Vec<_>>()) != Some(vec![&"errors".to_string()])
        || !e["errors"][0].is_string()
    {
        errors.push(format!("unknown job: HTTP {s} {e}, want 404 {{\"errors\": [message]}}"));
    }
}

#[test]
fn responses_validate_against_flinks_openapi_spec() {
    let spec = openapi::Spec::load(SPEC);
    openapi::self_test(&spec);
    let h = Home::new("openapi");
    let job = start_job(&h, "a");
    let mut errors = Vec::new();
    validate_endpoints(&spec, &job, &mut errors);
    assert!(
        errors.is_empty(),
        "responses that do not match Flink's spec:\n{}",
        errors.join("\n")
    );
    let o = h.expect(0, &["cancel", &job.jid]);
    assert!(o.contains("Cancelled job"), "{o}");
}

/// The Flink client's classpath, or why there is none.
fn flink_classpath() -> Result<String, String> {
    let file = std::env::var("CAIRN_FLINK_CLASSPATH").map_err(|_| {
        "CAIRN_FLINK_CLASSPATH is not set (.ci/services/flink-client.sh fetches flink-clients 2.3.0 with Maven)"
            .to_string()
    })?;
    let cp = std::fs::read_to_string(&file).map_err(|e| format!("cannot read {file}: {e}"))?;
    for tool in ["javac", "java"] {
        if Command::new(tool).arg("-version").output().is_err() {
            return Err(format!("{tool} is not installed (Java 17)"));
        }
    }
    Ok(cp.trim().to_string())
}

fn run_java(classes: &Path, cp: &str, args: &[&str]) -> (bool, Vec<(String, String, String)>, String) {
    let out = Command::new("java")
        .arg("-cp")
        .arg(format!("{}:{cp}", classes.display()))
        .arg("FlinkClientCompat")
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines = stdout
        .lines()
        .filter_map(|l| {
            let mut p = l.splitn(3, '\t');
            Some((
                p.next()?.to_string(),
                p.next()?.to_string(),
                p.next().unwrap_or("").to_string(),
            ))
        })
        .collect();
    (
        out.status.success(),
        lines,
        format!("{stdout}\n{}", String::from_utf8_lossy(&out.stderr)),
    )
}

fn result<'a>(lines: &'a [(String, String, String)], op: &str, all: &str) -> &'a str {
    let (status, _, detail) = lines
        .iter()
        .find(|(_, o, _)| o == op)
        .unwrap_or_else(|| panic!("no result for {op}:\n{all}"));
    assert_eq!(status, "OK", "{op} failed with Flink's client: {detail}\n{all}");
    detail
}

#[test]
fn flinks_rest_cluster_client_drives_cairn() {
    let cp = match flink_classpath() {
        Ok(cp) => cp,
        Err(why) if std::env::var_os("CAIRN_REQUIRE_FLINK_CLIENT").is_some() => {
            panic!("CAIRN_REQUIRE_FLINK_CLIENT is set but the Flink client test cannot run: {why}")
        }
        Err(why) => {
            eprintln!("SKIPPED flinks_rest_cluster_client_drives_cairn: {why}");
            return;
        }
    };
    let h = Home::new("flink");
    let classes = h.path("classes");
    std::fs::create_dir_all(&classes).unwrap();
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/flink/FlinkClientCompat.java");
    let javac = Command::new("javac")
        .args(["-cp", &cp, "-d"])
        .arg(&classes)
        .arg(src)
        .output()
        .unwrap();
    assert!(
        javac.status.success(),
        "javac: {}",
        String::from_utf8_lossy(&javac.stderr)
    );

    // A running job: list, details, status, savepoint, checkpoint, an
    // unknown job, stop with a savepoint.
    let a = start_job(&h, "a");
    let sp_dir = h.path("savepoints/by-flink");
    let (ok, lines, all) = run_java(
        &classes,
        &cp,
        &["run", &a.port.to_string(), &a.jid, &sp_dir.display().to_string()],
    );
    let jobs = result(&lines, "listJobs", &all);
    assert!(jobs.contains(&format!("{}=RUNNING cli demo", a.jid)), "{all}");
    let d = result(&lines, "getJobDetails", &all);
    assert_eq!(d, format!("{} RUNNING vertices=2", a.jid), "{all}");
    assert_eq!(result(&lines, "getJobStatus", &all), "RUNNING");
    let sp = PathBuf::from(result(&lines, "triggerSavepoint", &all));
    assert!(sp.starts_with(&sp_dir) && sp.join("_metadata").is_file(), "{all}");
    assert!(
        result(&lines, "triggerCheckpoint", &all).parse::<u64>().is_ok(),
        "{all}"
    );
    let unknown = result(&lines, "unknownJob", &all);
    assert!(unknown.starts_with("404 ") && unknown.contains("not found"), "{all}");
    let stopped = PathBuf::from(result(&lines, "stopWithSavepoint", &all));
    assert!(stopped.join("_metadata").is_file(), "{all}");
    assert!(ok, "{all}");
    wait_until("the stopped job to leave", || {
        !h.path(&format!("home/jobs/{}.json", a.jid)).exists()
    });

    // Another: status, disposal of the first savepoint, cancel, the job's
    // result.
    let b = start_job(&h, "b");
    let (ok, lines, all) = run_java(
        &classes,
        &cp,
        &["cancel", &b.port.to_string(), &b.jid, &sp.display().to_string()],
    );
    assert_eq!(result(&lines, "getJobStatus", &all), "RUNNING");
    result(&lines, "cancel", &all);
    assert_eq!(result(&lines, "requestJobResult", &all), format!("CANCELED {}", b.jid));
    result(&lines, "disposeSavepoint", &all);
    assert!(ok, "{all}");
    assert!(
        !sp.exists() && stopped.exists(),
        "only the named savepoint was disposed of"
    );
}
